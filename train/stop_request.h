// A request to stop training at the next step, with a checkpoint that --resume continues:
// SIGINT (Ctrl-C), SIGTERM (Slurm's and Kubernetes' notice before they kill a job) and
// SIGUSR1 (Slurm's --signal=USR1@SECONDS preemption warning, and the one signal Open MPI's
// mpirun passes on to the ranks: fgvc-train --gpus turns the others into it).
// fgvc-train installs the handlers; the training loop asks stop_signal() before each step
// and every rank stops at the same step. A second SIGINT ends the process at once (the
// default action), for a user who does not want to wait for the step.
#pragma once

namespace fgvc {
namespace train {

void install_stop_handlers();
// The signal that asked to stop (0: none).
int stop_signal();
// As if `signal` had arrived (tests, or a host program that embeds the trainer); 0 clears it.
void request_stop(int signal);
// "SIGTERM" for SIGTERM, and so on.
const char* signal_name(int signal);

}  // namespace train
}  // namespace fgvc
