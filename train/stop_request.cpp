#include "train/stop_request.h"

#include <signal.h>

#include <atomic>
#include <initializer_list>

namespace fgvc {
namespace train {

namespace {
std::atomic<int> requested{0};  // lock-free: safe to store from a signal handler
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch lock-free atomics");

void on_signal(int signal) { requested.store(signal); }
}  // namespace

void install_stop_handlers() {
  for (int s : {SIGINT, SIGTERM, SIGUSR1}) {
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    // A read or a wait in progress goes on (the loop polls the flag). After one Ctrl-C the
    // next is the default action: a user who presses it twice wants out now.
    action.sa_flags = SA_RESTART | (s == SIGINT ? SA_RESETHAND : 0);
    ::sigaction(s, &action, nullptr);
  }
}

int stop_signal() { return requested.load(); }

void request_stop(int signal) { requested.store(signal); }

const char* signal_name(int signal) {
  switch (signal) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace train
}  // namespace fgvc
