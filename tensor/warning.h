// Warnings the library prints on stderr ("fgvc-train: warning: 2 unreadable file(s) skipped"),
// named after the binary that runs, as its errors are (SPEC.md section 4): a user who pipes
// several fgvc-* binaries together sees which one warned.
#pragma once
#include <string>

namespace fgvc {

// The name warnings start with: "fgvc" until a binary sets its own (app::run does, before any
// thread starts; set it once, at the start).
void set_program_name(const std::string& name);
const std::string& program_name();

// One line "NAME: warning: MESSAGE\n" on stderr, written by one call so that lines from the
// loader's threads do not interleave. printf-style.
void warn(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace fgvc
