// The translation unit of the tests' shared precompiled header (CMakeLists.txt).
