// fgvc-train: the paper's training recipe (SPEC.md section 4; train/trainer.h).
//   fgvc-train --model inception_v3 --data inat/train --val inat/val --out runs/stage1 --epochs 40
//   fgvc-subset --data inat/train --max-per-class 100 --out balanced.txt
//   fgvc-train --model inception_v3 --data balanced.txt --val inat/val --out runs/stage2 ...
//       ... --init runs/stage1/last.safetensors --lr 0.0045 --decay-epochs 4 --epochs 4
#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "apps/app.h"
#include "dist/communicator.h"
#include "nn/models/registry.h"
#include "tensor/cuda_runtime.h"
#include "train/stop_request.h"
#include "train/trainer.h"

namespace {

// The mpirun started below, for the signal handler.
std::atomic<pid_t> mpirun_pid{0};
std::atomic<int> stop_requests{0};

// Open MPI's mpirun aborts the job on SIGINT and SIGTERM (the ranks are killed a second
// later, before a checkpoint of any size is written) and forwards SIGUSR1 to every rank. So
// what would stop this process reaches the ranks as SIGUSR1, and they stop at their next
// step with a checkpoint: Ctrl-C, SIGTERM, SIGUSR1 and a hangup (the terminal closed). A
// second Ctrl-C and Ctrl-\ abort the job at once; Ctrl-Z and fg pause and resume it.
void forward_signal(int signal) {
  const pid_t pid = mpirun_pid.load();
  if (pid <= 0) return;
  if (signal == SIGTSTP) {
    ::kill(pid, SIGTSTP);
    ::kill(::getpid(), SIGSTOP);  // the shell sees its job stopped
  } else if (signal == SIGCONT) {
    ::kill(pid, SIGCONT);
  } else if (signal == SIGQUIT) {
    ::kill(pid, SIGTERM);
  } else {
    const bool again = stop_requests.fetch_add(1) > 0;
    ::kill(pid, again && signal == SIGINT ? SIGTERM : SIGUSR1);
  }
}

// An accuracy as a percentage with two decimals ("85.71%", "5.00%", "100.00%").
std::string percent(double fraction) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f%%", 100 * fraction);
  return text;
}

constexpr int kForwarded[] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP, SIGQUIT, SIGTSTP, SIGCONT};

// fgvc-train --gpus N on one machine: the same command line, N processes, started by mpirun
// (one per GPU; each takes the GPU of its local rank). Not bound to a core each (Open MPI's
// default for 2 processes), which would leave a rank's loader workers and threads one core;
// each gets its share of the cores for OpenMP unless OMP_NUM_THREADS says otherwise.
// mpirun runs as a child in a process group of its own, so that a terminal's signals reach
// this process alone, which passes them on (forward_signal); if this process dies, mpirun
// gets SIGUSR1 (a stop with a checkpoint). This process exits with mpirun's status.
[[noreturn]] void relaunch_under_mpirun(int gpus, int argc, char** argv) {
  std::vector<std::string> args = {"mpirun", "-np", std::to_string(gpus), "--bind-to", "none", "--stdin", "none"};
  if (!std::getenv("OMP_NUM_THREADS")) {
    cpu_set_t usable;  // the cores this process may run on (a cpuset or taskset counts)
    const long cores = ::sched_getaffinity(0, sizeof usable, &usable) == 0 ? CPU_COUNT(&usable)
                                                                             : ::sysconf(_SC_NPROCESSORS_ONLN);
    args.push_back("-x");
    args.push_back("OMP_NUM_THREADS=" + std::to_string(std::max(1L, cores / gpus)));
  }
  if (::geteuid() == 0) args.push_back("--allow-run-as-root");
  for (int i = 0; i < argc; ++i) args.push_back(argv[i]);
  std::string line;
  for (size_t i = 0; i < args.size(); ++i) line += (i ? " " : "") + args[i];
  const auto cannot_start = [&](int error) {
    return fgvc::Error("--gpus " + std::to_string(gpus) + ": cannot start mpirun (" + std::strerror(error) +
                       "); install openmpi-bin, or run: " + line);
  };
  std::vector<char*> raw;
  for (std::string& a : args) raw.push_back(a.data());
  raw.push_back(nullptr);
  // A failed exec reports its errno through this pipe; a successful one closes it (CLOEXEC).
  int exec_error[2];
  if (::pipe2(exec_error, O_CLOEXEC) != 0) throw cannot_start(errno);
  std::fflush(nullptr);
  // The signals wait (blocked) until mpirun's PID is known; the child may not be left
  // unwaited-for (SIGCHLD ignored makes waitpid fail).
  ::signal(SIGCHLD, SIG_DFL);
  sigset_t forwarded, before;
  sigemptyset(&forwarded);
  for (int signal : kForwarded) sigaddset(&forwarded, signal);
  ::sigprocmask(SIG_BLOCK, &forwarded, &before);
  struct sigaction action {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signal : kForwarded) ::sigaction(signal, &action, nullptr);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) throw cannot_start(errno);
  if (child == 0) {
    ::setpgid(0, 0);
    for (int signal : kForwarded) ::signal(signal, SIG_DFL);
    ::signal(SIGTTOU, SIG_IGN);  // a background group may write to the terminal even with stty tostop
    ::prctl(PR_SET_PDEATHSIG, SIGUSR1);  // this process killed: the ranks stop with a checkpoint
    if (::getppid() != parent) ::_exit(1);  // it died before the line above
    ::sigprocmask(SIG_SETMASK, &before, nullptr);
    ::execvp("mpirun", raw.data());
    const int error = errno;
    (void)!::write(exec_error[1], &error, sizeof error);
    ::_exit(127);
  }
  ::close(exec_error[1]);
  ::setpgid(child, child);  // (the child does it too: whichever runs first)
  mpirun_pid.store(child);
  ::sigprocmask(SIG_SETMASK, &before, nullptr);  // what came meanwhile is passed on now
  int error = 0;
  ssize_t got;
  while ((got = ::read(exec_error[0], &error, sizeof error)) < 0 && errno == EINTR) {
  }
  ::close(exec_error[0]);
  int status = 0;
  pid_t waited;
  while ((waited = ::waitpid(child, &status, 0)) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof error)) throw cannot_start(error);
  if (waited < 0) throw fgvc::Error(std::string("--gpus: lost mpirun: ") + std::strerror(errno));
  std::exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace

int main(int argc, char** argv) {
  fgvc::train::TrainConfig c;
  bool no_color = false, no_plots = false, quiet = false;
  return fgvc::app::run(
      "fgvc-train", "Train or fine-tune a model (TF-slim/paper defaults); resumable run folder", argc, argv,
      [&](CLI::App& cli) {
        cli.add_option("--model", c.model, "model name (fgvc-model-info lists them)")->required()->check(fgvc::app::ModelName);
        cli.add_option("--data", c.data, "training data: ImageFolder, .txt list (e.g. from fgvc-subset) or .json")
            ->required()->check(fgvc::app::NonEmptyPath);
        cli.add_option("--val", c.val, "validation data, evaluated after each epoch (best.safetensors)")->check(fgvc::app::NonEmptyPath);
        cli.add_option("--train-counts", c.train_counts,
                       "data whose per-class image counts per_class.csv shows (stage 2 on a subset: the full set's)")
            ->check(fgvc::app::NonEmptyPath);
        cli.add_option("--out", c.out, "run folder (config.json, metrics.jsonl, checkpoints, plots)")->required()->check(fgvc::app::OutputFolder);
        cli.add_option("--input-size", c.input_size, "input size S (default 299; 32 for resnet20/32/56)")
            ->check(fgvc::app::InputSize);
        cli.add_option("--batch-size", c.batch_size, "images per step")->capture_default_str()->check(fgvc::app::TrainingBatchSize);
        auto* epochs = cli.add_option("--epochs", c.epochs, "epochs in all (with --resume: up to this total)")
                           ->check(fgvc::app::Count);
        auto* steps = cli.add_option("--steps", c.steps, "optimizer steps in all (with --resume: up to this total)")
                          ->check(fgvc::app::Count);
        epochs->excludes(steps);
        cli.add_option("--optimizer", c.optimizer, "rmsprop (TF semantics) or sgd (momentum)")
            ->capture_default_str()->check(CLI::IsMember({"rmsprop", "sgd"}));
        cli.add_option("--lr", c.lr, "initial learning rate")->capture_default_str()->check(fgvc::app::Positive);
        cli.add_option("--lr-decay", c.lr_decay, "staircase decay factor")->capture_default_str()->check(fgvc::app::Fraction);
        cli.add_option("--decay-epochs", c.decay_epochs, "epochs per decay (default 2; the paper fine-tunes with --lr 0.0045 --decay-epochs 4)")
            ->check(fgvc::app::Positive);
        cli.add_option("--momentum", c.momentum, "momentum (RMSProp and SGD)")->capture_default_str()->check(fgvc::app::Fraction);
        cli.add_option("--rmsprop-decay", c.rmsprop_decay, "RMSProp decay of the squared-gradient average")
            ->capture_default_str()->check(fgvc::app::Fraction);
        cli.add_option("--epsilon", c.epsilon, "RMSProp epsilon (inside the square root, as TensorFlow)")
            ->capture_default_str()->check(fgvc::app::Positive);
        cli.add_option("--label-smoothing", c.label_smoothing, "label smoothing")->capture_default_str()->check(fgvc::app::Fraction);
        cli.add_option("--weight-decay", c.weight_decay, "L2 on conv/fc weights (TF-slim)")->capture_default_str()->check(fgvc::app::NonNegative);
        cli.add_option("--aux-weight", c.aux_weight, "weight of the Inception models' auxiliary loss (0: none)")->capture_default_str()->check(fgvc::app::NonNegative);
        cli.add_option("--ema-decay", c.ema_decay, "keep a moving average of the weights (e.g. 0.9999), used for evaluation and export")
            ->check(fgvc::app::Fraction);
        cli.add_option("--bn-decay", c.bn_decay, "batch-norm moving-average decay (default 0.9997 Inception, 0.9 others)")
            ->check(fgvc::app::Fraction);
        cli.add_option("--clip-grad-norm", c.clip_grad_norm, "clip gradients to this global norm (default off)")
            ->check(fgvc::app::Positive);
        cli.add_option("--init", c.init, "start from these weights (a checkpoint or timm/torchvision-named weights)")->check(fgvc::app::NonEmptyPath);
        cli.add_flag("--reset-classifier", c.reset_classifier, "with --init: a new classifier for this data's classes");
        cli.add_flag("--resume", c.resume, "continue the run in --out from last.safetensors, exactly");
        cli.add_option("--seed", c.seed, "seed of initialisation, data order and augmentation")->capture_default_str()->check(fgvc::app::Seed);
        cli.add_option("--workers", c.workers, "loader threads")->capture_default_str()->check(fgvc::app::Threads);
        cli.add_flag("--no-color-distort", no_color, "no colour distortion in training");
        cli.add_option("--crop", c.crop,
                       "the random crop: tf-slim (the paper's: height uniform, TensorFlow's "
                       "sample_distorted_bounding_box) or torchvision (RandomResizedCrop: area uniform)")
            ->capture_default_str()->check(CLI::IsMember({"tf-slim", "torchvision"}));
        cli.add_option("--min-crop-area", c.min_crop_area,
                       "smallest area fraction of the random crop (default 0.05, TF-slim's area_range; 0.08 with "
                       "--crop torchvision, its scale; with tf-slim, below --min-crop-covered it acts as that)")
            ->check(fgvc::app::range_check(0.01, 1.0));
        cli.add_option("--min-crop-covered", c.min_crop_covered,
                       "with --crop tf-slim, a crop covering less of the image is drawn again (TF-slim's "
                       "min_object_covered)")
            ->capture_default_str()->check(fgvc::app::Fraction);
        cli.add_option("--amp", c.amp, "mixed precision on CUDA: bf16, fp16 (dynamic loss scaling) or off")
            ->capture_default_str()->check(CLI::IsMember({"bf16", "fp16", "off"}));
        cli.add_flag("--cudnn-benchmark", c.cudnn_benchmark,
                     "CUDA: cuDNN times every convolution algorithm on a shape's first call and keeps the fastest "
                     "(PyTorch's cudnn.benchmark; default: its heuristic pick)");
        cli.add_flag("--sync-bn", c.sync_bn, "several processes: batch-norm statistics over all of them (default: per process)");
        cli.add_option("--gpus", c.gpus, "GPUs on this machine: starts one process per GPU under mpirun")->capture_default_str()->check(fgvc::app::Threads);
        cli.add_option("--log-every", c.log_every, "steps per metrics line")->capture_default_str()->check(fgvc::app::Count);
        cli.add_option("--save-every", c.save_every, "also checkpoint every N steps (default: each epoch's end)")
            ->check(fgvc::app::CountOrZero);
        cli.add_flag("--no-plots", no_plots, "do not draw the PNG plots at the end");
        cli.add_flag("--quiet", quiet, "no progress output");
        cli.footer(
            "Defaults follow the paper and TF-slim. --steps/--epochs are totals: --resume continues the run in\n"
            "--out up to them, bit-identical on the CPU to an uninterrupted run with the same flags. Ctrl-C, SIGTERM\n"
            "or SIGUSR1 stop the run before its next step with a checkpoint there (exit 1, saying so);\n"
            "--resume goes on from it.\n"
            "\n"
            "Several GPUs or machines (data parallel, one process per GPU, gradients averaged by NCCL; on the CPU\n"
            "by MPI): --gpus N on one machine starts N processes through mpirun itself; across machines run\n"
            "  mpirun -np 16 -H host1:8,host2:8 --bind-to none fgvc-train ...   (--batch-size is per process)\n"
            "Rank 0 writes the run folder; --resume works with any number of processes if processes x --batch-size\n"
            "stays the same. As root, Open MPI needs --allow-run-as-root (or OMPI_ALLOW_RUN_AS_ROOT=1 and\n"
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1).");
      },
      [&](const fgvc::app::Common& common) {
        using namespace fgvc;
        const Device device = common.resolved_device(/*make_current=*/false);  // the trainer picks each rank's GPU
        if (c.steps == 0 && c.epochs == 0) throw app::UsageError("give --epochs or --steps");
        if (c.amp != "off" && !device.is_cuda())
          throw app::UsageError("--amp " + c.amp + ": mixed precision needs a CUDA device (this run is on " +
                                device.str() + "); use --amp off");
        if (c.gpus > 1 && !dist::launched_by_mpi()) {
          if (!device.is_cuda())
            throw app::UsageError("--gpus " + std::to_string(c.gpus) +
                                  " needs CUDA devices; for several CPU processes run: mpirun -np N fgvc-train --device cpu ...");
          // NCCL refuses two ranks on one GPU.
          if (c.gpus > cuda_device_count())
            throw app::UsageError("--gpus " + std::to_string(c.gpus) + ": this machine has " +
                                  std::to_string(cuda_device_count()) + " CUDA device(s)");
          // Each process takes the GPU of its local rank.
          if (common.device.find(':') != std::string::npos)
            throw app::UsageError("--gpus " + std::to_string(c.gpus) + " uses GPUs 0.." + std::to_string(c.gpus - 1) +
                                  ", one per process; --device " + common.device +
                                  " names one (give --device cuda, or CUDA_VISIBLE_DEVICES to choose the GPUs)");
          relaunch_under_mpirun(c.gpus, argc, argv);  // exits with mpirun's status, or throws when it cannot start
        }
        if (c.reset_classifier && c.init.empty()) throw app::UsageError("--reset-classifier needs --init");
        app::check_model_name(c.model);
        app::check_input_size(c.model, c.input_size > 0 ? c.input_size : nn::default_input_size(c.model),
                              c.aux_weight > 0);
        c.color_distort = !no_color;
        c.plots = !no_plots;
        c.progress = !quiet && !common.json;
        train::install_stop_handlers();  // Ctrl-C, SIGTERM, SIGUSR1: a checkpoint, then the end
        const train::TrainSummary s = train::train_model(c, device);
        // A stopped run did not reach its total: exit 1 (SPEC's "any other error") with the
        // error line saying where it stands; --json still prints the summary.
        if (s.stopped_by) common.exit_code = 1;
        if (s.rank != 0) std::exit(common.exit_code);  // data-parallel: rank 0 reports for the run
        const bool nothing_to_do = s.resumed && s.images == 0 && !s.stopped_by;  // --resume of a run already at its total
        const auto four = [](double v) {
          char text[32];
          std::snprintf(text, sizeof text, "%.4f", v);
          return std::string(text);
        };
        if (s.stopped_by)
          std::fprintf(stderr,
                       "fgvc-train: error: stopped by %s after step %lld of the run; %s/last.safetensors holds it: the "
                       "same command with --resume continues it\n",
                       train::signal_name(s.stopped_by), (long long)s.steps, c.out.c_str());
        else if (!common.json && nothing_to_do)
          std::printf("nothing to do: the run in %s is already at step %lld (%lld epoch(s)); %s asks for no more\n",
                      c.out.c_str(), (long long)s.steps, (long long)s.epochs_done,
                      (c.steps > 0 ? "--steps " + std::to_string(c.steps) : "--epochs " + std::to_string(c.epochs)).c_str());
        else if (!common.json)
          // "trained: 8 steps ..." or "resumed at step 4: 2 steps to step 6 ..."; of one logged
          // line (a resumed part shorter than --log-every) its loss alone, not "1.347 -> 1.347".
          std::printf("%s: %lld steps%s (%.1f img/s), loss %s%s; %lld unreadable file(s) skipped%s; run in %s\n",
                      s.resumed ? ("resumed at step " + std::to_string(s.steps - s.steps_run)).c_str() : "trained",
                      (long long)s.steps_run, s.resumed ? (" to step " + std::to_string(s.steps)).c_str() : "",
                      s.images_per_sec,
                      (s.loss_lines > 1 ? four(s.first_loss) + " -> " + four(s.last_loss) : four(s.last_loss)).c_str(),
                      s.best_top1 >= 0 ? (", best val top-1 " + percent(s.best_top1)).c_str() : "",
                      (long long)s.skipped,
                      s.val_skipped ? (" (and " + std::to_string(s.val_skipped) + " in --val)").c_str() : "",
                      c.out.c_str());
        nlohmann::json out = {{"world_size", s.world_size}, {"steps", s.steps},           {"steps_run", s.steps_run}, {"epochs", s.epochs_done},   {"images", s.images},
                              {"skipped", s.skipped},       {"val_skipped", s.val_skipped},
                              {"first_loss", s.first_loss}, {"last_loss", s.last_loss},
                              {"seconds", s.seconds},       {"images_per_sec", s.images_per_sec},
                              {"out", c.out}};
        if (s.best_top1 >= 0) out["best_top1"] = s.best_top1;
        if (s.stopped_by) out["stopped_by"] = train::signal_name(s.stopped_by);
        if (s.images == 0) out["first_loss"] = nullptr, out["last_loss"] = nullptr;  // no step, no loss
        return out;
      });
}
