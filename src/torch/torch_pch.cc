// The translation unit of LibTorch's shared precompiled header (cmake/torch.cmake).
