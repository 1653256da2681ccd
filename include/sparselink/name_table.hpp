// The names of sparselink's closed families (enum classes), by one mechanism: each family has
// one constexpr table of {value, name} rows beside its enum, in enumerator order (a
// static_assert with RowsInOrder checks it), and its Name and Parse functions look the table
// up with EnumName and FindName. Adding a member means adding a row.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace sparselink {

template <typename E>
struct NameRow {
  E value;
  std::string_view name;
};

// The name of `value`, or "unknown" for a value outside the table (a corrupt or future byte).
// O(rows); does not allocate.
template <typename Row, size_t N, typename E>
constexpr std::string_view EnumName(const std::array<Row, N>& table, E value) {
  for (const Row& row : table) {
    if (row.value == value) return row.name;
  }
  return "unknown";
}

// The row named `text`, or null.
template <typename Row, size_t N>
constexpr const Row* FindName(const std::array<Row, N>& table, std::string_view text) {
  for (const Row& row : table) {
    if (row.name == text) return &row;
  }
  return nullptr;
}

// "a, b, c": the names, for an error that lists the choices.
template <typename Row, size_t N>
std::string NameChoices(const std::array<Row, N>& table) {
  std::string choices;
  for (const Row& row : table) choices += (choices.empty() ? "" : ", ") + std::string(row.name);
  return choices;
}

// Whether the rows hold the enumerators first, first + 1, ... in order (for static_assert).
template <typename Row, size_t N>
constexpr bool RowsInOrder(const std::array<Row, N>& table, size_t first = 0) {
  for (size_t i = 0; i < N; ++i) {
    if (static_cast<size_t>(table[i].value) != first + i) return false;
  }
  return true;
}

}  // namespace sparselink
