"""Side-by-side benchmark: kiln vs PyTorch eager, JAX jit and Keras 3 (JAX backend).

Run through benches/compare/run.sh, which prepares the virtual environment and builds
kiln. For every case (model × batch size, and the sequence length for the token models:
`--dim seq=N` for kiln) one process per framework is started; then,
for a number of rounds, each framework in turn (the order rotating from round to
round) runs a block of timed steps after a short warm-up, with a pause between
frameworks so that no thread pool is still spinning when the next one starts. A
round's number is the median of its block; the reported number is the median over
rounds. kiln is run as `kiln bench SPEC --batch-size N --runs R --json` each round
(its compile time is the median of its 5 in-process compiles; forward and train step
are medians after 3 warm-up calls).

Peak memory is the peak resident set (ru_maxrss from wait4) of each framework's
process for the case: for Python peers it includes the interpreter and the
framework's libraries.

Other jobs sharing the cores distort every number, so before each round the script
waits (up to --max-wait seconds) until other processes have used less than
--quiet-threshold of the machine for 3 s, measures from /proc/stat how much CPU other
processes took during the round, and discards and reruns a disturbed round (up to
--max-retries times per case). What the kept rounds saw is printed with the results.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS = ["torch", "jax", "keras"]
LABEL = {"kiln": "kiln", "torch": "PyTorch eager", "jax": "JAX jit", "keras": "Keras 3 (JAX)"}

# (model, spec, batch, what to time, sequence length or 0)
CASES = [
    ("mlp", "specs/mlp.yaml", 1, ("train", "forward"), 0),
    ("mlp", "specs/mlp.yaml", 32, ("train",), 0),
    ("mlp", "specs/mlp.yaml", 128, ("train", "forward"), 0),
    ("mlp", "specs/mlp.yaml", 1024, ("train",), 0),
    ("cnn", "specs/cnn.yaml", 1, ("forward",), 0),
    ("cnn", "specs/cnn.yaml", 32, ("train",), 0),
    ("cnn", "specs/cnn.yaml", 128, ("train",), 0),
] + [
    # The sequence models (issue 11): batch 1, 32 and 128 at lengths 32 and 128.
    (model, f"specs/{model}.yaml", batch, ("train", "forward"), seq)
    for model in ("lstm", "attention")
    for seq in (32, 128)
    for batch in (1, 32, 128)
]
# The frameworks each model is written for (the token models have no pure-JAX version).
MODEL_PEERS = {"lstm": ("torch", "keras"), "attention": ("torch", "keras")}


def case_name(model, batch, seq):
    """`mlp128`, or `attention32s128` for batch 32 at sequence length 128."""
    return f"{model}{batch}" + (f"s{seq}" if seq else "")


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def own_cpu_seconds(live_pids=()):
    """CPU time of this process, its reaped children and the live workers."""
    t = os.times()
    return (t.user + t.system + t.children_user + t.children_system
            + sum(proc_cpu_seconds(p) for p in live_pids))


def foreign_fraction(start, live_pids):
    """Share of the machine's CPU taken by other processes since `start`."""
    busy0, own0, wall0 = start
    busy1 = cpu_jiffies()[0]
    own1, wall1 = own_cpu_seconds(live_pids), time.time()
    busy = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    return max(0.0, busy - (own1 - own0)) / max(1e-9, (wall1 - wall0) * os.cpu_count())


def mark(live_pids):
    return cpu_jiffies()[0], own_cpu_seconds(live_pids), time.time()


def wait_quiet(limit_s, threshold, live_pids):
    """Waits until other processes use less than `threshold` of the machine for 3 s in
    a row (or `limit_s` has passed); returns the seconds waited."""
    t0 = time.time()
    calm = 0
    while time.time() - t0 < limit_s:
        m = mark(live_pids)
        time.sleep(1.0)
        calm = calm + 1 if foreign_fraction(m, live_pids) < threshold else 0
        if calm >= 3:
            break
    return time.time() - t0


def spawn(args, env):
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def reap(p):
    """Waits for `p`; returns its peak RSS in MiB (wait4's ru_maxrss is in KiB)."""
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss / 1024.0


class Peer:
    def __init__(self, fw, model, batch, seq, env):
        self.fw = fw
        self.p = spawn([sys.executable, os.path.join(HERE, "peers.py"), fw, model, str(batch),
                        str(seq)], env)
        hello = self.read()
        self.compile_ms = hello["compile_ms"]

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            err = self.p.stderr.read()
            raise RuntimeError(f"{self.fw} worker died:\n{err[-3000:]}")
        return json.loads(line)

    def run(self, what, n):
        self.p.stdin.write(f"{what} {n}\n")
        self.p.stdin.flush()
        return statistics.median(self.read()["ms"])

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.read()
        self.p.stdin.close()
        self.p.stderr.read()
        return reap(self.p)


def kiln_round(kiln, spec, batch, seq, runs, env):
    dims = ["--dim", f"seq={seq}"] if seq else []
    p = spawn([kiln, "bench", spec, "--batch-size", str(batch), "--runs", str(runs), "--json"]
              + dims, env)
    p.stdin.close()
    out, err = p.stdout.read(), p.stderr.read()
    rss = reap(p)
    if p.returncode != 0:
        raise RuntimeError(f"kiln bench failed: {err}")
    return json.loads(out.strip().splitlines()[-1]), rss


def fmt_ms(v):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(a, b):
    if a is None or b is None:
        return "—"
    return f"{a / b:.2f}×"


def versions(env, kiln):
    code = ("import json, torch, jax, jaxlib, keras, numpy, sys;"
            "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,"
            "'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'keras': keras.__version__,"
            "'numpy': numpy.__version__, 'torch_threads': (torch.set_num_threads(int("
            "__import__('os').environ['BENCH_THREADS'])), torch.get_num_threads())[1],"
            "'jax_devices': str(jax.devices())}))")
    v = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                  text=True, check=True).stdout)
    v["rustc"] = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    # The repository the kiln binary was built in (target/release/kiln → its root).
    kroot = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(kiln))))
    v["kiln_commit"] = subprocess.run(["git", "-C", kroot, "rev-parse", "--short", "HEAD"],
                                      capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", kroot, "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    v["kiln_worktree"] = "modified" if dirty else "clean"
    v["cpu"] = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                     if l.startswith("model name")), platform.processor())
    v["cores"] = os.cpu_count()
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target/release/kiln"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50, help="timed steps per block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between frameworks")
    ap.add_argument("--only", default="", help="comma-separated case names, e.g. mlp128,cnn32,"
                    "attention32s128 (batch 32, sequence length 128)")
    ap.add_argument("--seq-rounds", type=int, default=0,
                    help="rounds for the sequence models' cases (default: --rounds)")
    ap.add_argument("--seq-runs", type=int, default=0,
                    help="timed steps per block for the sequence models' cases (default: --runs)")
    ap.add_argument("--frameworks", default="kiln,torch,jax,keras")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--quiet-threshold", type=float, default=0.05,
                    help="a round during which other processes took more than this share "
                         "of the machine's CPU is discarded and run again")
    ap.add_argument("--max-wait", type=float, default=900,
                    help="seconds to wait for a quiet machine before a round")
    ap.add_argument("--max-retries", type=int, default=10, help="retries of a disturbed round")
    a = ap.parse_args()

    fws = a.frameworks.split(",")
    t = str(a.threads)
    env = dict(os.environ)
    env.update({
        "BENCH_THREADS": t, "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t,
        "KILN_NUM_THREADS": t,  # kiln's thread team (GEMM splits, large loops)
        "XLA_FLAGS": (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true").strip(),
        "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", "KERAS_BACKEND": "jax",
        "CUDA_VISIBLE_DEVICES": "",
    })
    info = versions(env, a.kiln)
    print("machine:", info["cpu"], f"({info['cores']} cores);", f"threads per framework: {a.threads}")
    print("versions:", ", ".join(f"{k} {info[k]}" for k in
                                 ("python", "torch", "jax", "jaxlib", "keras", "rustc")),
          f"kiln {info['kiln_commit']} ({info['kiln_worktree']} work tree)", flush=True)

    busy0, total0 = cpu_jiffies()
    own0, wall0 = own_cpu_seconds(), time.time()
    load0 = os.getloadavg()
    results = {}  # (case, metric) -> {fw: value}
    disturbed, discarded = [], {}  # per kept round: foreign CPU share; per case: retries
    per_round = {}  # "case/metric/fw" -> the kept rounds' medians, in order
    rss = {}      # case -> {fw: MiB}
    wanted = set(filter(None, a.only.split(",")))
    labels = {}  # case -> (model, batch, seq)
    for model, spec, batch, whats, seq in CASES:
        case = case_name(model, batch, seq)
        if wanted and case not in wanted:
            continue
        labels[case] = (model, batch, seq)
        rounds = (a.seq_rounds or a.rounds) if seq else a.rounds
        runs = (a.seq_runs or a.runs) if seq else a.runs
        print(f"[{case}] starting workers…", flush=True)
        peers = {fw: Peer(fw, model, batch, seq, env) for fw in PEERS
                 if fw in fws and fw in MODEL_PEERS.get(model, PEERS)}
        samples = {}  # (metric, fw) -> [round medians]
        kiln_compile, kiln_rss = [], 0.0
        order = [fw for fw in ["kiln"] + PEERS if fw == "kiln" and fw in fws or fw in peers]
        pids = [p.p.pid for p in peers.values()]
        r, retries = 0, 0
        while r < rounds:
            waited = wait_quiet(a.max_wait, a.quiet_threshold, pids)
            start = mark(pids)
            rot = order[r % len(order):] + order[:r % len(order)]
            this = {}
            for fw in rot:
                time.sleep(a.pause)
                if fw == "kiln":
                    res, m = kiln_round(a.kiln, spec, batch, seq, runs, env)
                    kiln_rss = max(kiln_rss, m)
                    this[("compile", fw)] = res["compile_ms"]
                    for w in whats:
                        key = "train_step_ms" if w == "train" else "forward_ms"
                        this[(w, fw)] = res[key]
                else:
                    for w in whats:
                        this[(w, fw)] = peers[fw].run(w, runs)
            foreign = foreign_fraction(start, pids)
            line = ", ".join(f"{fw} {w} {fmt_ms(this[(w, fw)])}" for w in whats for fw in order)
            if foreign > a.quiet_threshold and retries < a.max_retries:
                retries += 1
                print(f"[{case}] round {r + 1} discarded (other processes took "
                      f"{100 * foreign:.0f}% of the CPU): {line}", flush=True)
                continue
            for (w, fw), v in this.items():
                if w == "compile":
                    kiln_compile.append(v)
                else:
                    samples.setdefault((w, fw), []).append(v)
            disturbed.append(foreign)
            print(f"[{case}] round {r + 1}/{rounds} (other processes {100 * foreign:.1f}%, "
                  f"waited {waited:.0f} s): {line}", flush=True)
            r += 1
        discarded[case] = retries
        for (w, fw), v in samples.items():
            results.setdefault((case, w), {})[fw] = statistics.median(v)
            per_round[f"{case}/{w}/{fw}"] = v
        per_round[f"{case}/compile/kiln"] = kiln_compile
        rss[case] = {}
        if "kiln" in fws:
            rss[case]["kiln"] = kiln_rss
        compile_row = {}
        if "kiln" in fws:
            compile_row["kiln"] = statistics.median(kiln_compile)
        for fw, p in peers.items():
            if p.compile_ms is not None:
                compile_row[fw] = p.compile_ms
            rss[case][fw] = p.close()
        if case in ("mlp128", "cnn32"):
            results[(case, "compile")] = compile_row
    busy1, total1 = cpu_jiffies()
    own1, wall1 = own_cpu_seconds(), time.time()
    hz = os.sysconf("SC_CLK_TCK")
    machine_busy_s = (busy1 - busy0) / hz
    foreign_s = max(0.0, machine_busy_s - (own1 - own0))
    cores = os.cpu_count()
    foreign_pct = 100.0 * foreign_s / ((wall1 - wall0) * cores)

    # ---------------------------------------------------------------- report
    peers_in = [fw for fw in PEERS if fw in fws]
    names = {"train": "train step", "forward": "forward (inference)", "compile": "compile"}
    head = ["case", "kiln"] + [LABEL[f] for f in peers_in] + [f"kiln / {LABEL[f]}" for f in peers_in]
    rows = []
    for (case, w), vals in results.items():
        model, bs, seq = labels[case]
        if w == "compile":
            label = f"{model.upper()} compile (spec/trace → train step)"
        else:
            label = f"{model.upper()} {names[w]}, batch {bs}" + (f", length {seq}" if seq else "")
        k = vals.get("kiln")
        rows.append([label, fmt_ms(k)] + [fmt_ms(vals.get(f)) for f in peers_in]
                    + [fmt_ratio(k, vals.get(f)) for f in peers_in])
    print()
    print("Times in milliseconds (median over rounds of per-round medians); ratio < 1 means kiln is faster.")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    print("Peak resident memory per process, MiB (Python peers include interpreter and libraries):")
    mh = ["case"] + [LABEL[f] for f in ["kiln"] + peers_in if f in fws]
    print("| " + " | ".join(mh) + " |")
    print("|" + "|".join(["---"] + ["---:"] * (len(mh) - 1)) + "|")
    for case, v in rss.items():
        print("| " + " | ".join([case] + [f"{v[f]:.0f}" if f in v else "—"
                                          for f in ["kiln"] + peers_in if f in fws]) + " |")
    print()
    print(f"load average before: {load0[0]:.2f}; other processes used {foreign_pct:.1f}% of the "
          f"machine's CPU over the whole run ({foreign_s:.1f} CPU-s over {wall1 - wall0:.0f} s, "
          f"including waits); during the kept rounds at most {100 * max(disturbed or [0]):.1f}% "
          f"(median {100 * statistics.median(disturbed or [0]):.1f}%); rounds discarded as "
          f"disturbed: {sum(discarded.values())}")
    if max(disturbed or [0]) > a.quiet_threshold:
        print("WARNING: some kept rounds ran on a busy machine; their numbers are distorted.")

    # Targets of issue 4 (MLP 784-256-256-10, Adam, sparse CE).
    def get(case, w, fw):
        return results.get((case, w), {}).get(fw)
    checks = [
        ("train step at batch 128 ≤ 0.8× JAX jit", get("mlp128", "train", "kiln"),
         get("mlp128", "train", "jax"), 0.8),
        ("train step at batch 128 ≤ 0.6× PyTorch eager", get("mlp128", "train", "kiln"),
         get("mlp128", "train", "torch"), 0.6),
        ("compile ≤ 1/20 of JAX's first call", get("mlp128", "compile", "kiln"),
         get("mlp128", "compile", "jax"), 1 / 20),
        ("batch-1 forward ≤ 1/3 of PyTorch eager", get("mlp1", "forward", "kiln"),
         get("mlp1", "forward", "torch"), 1 / 3),
    ]
    print()
    print("Issue 4 targets (MLP 784-256-256-10):")
    for name, k, p, lim in checks:
        if k is None or p is None:
            print(f"  {name}: not measured")
            continue
        ok = k / p <= lim
        print(f"  {name}: {'MET' if ok else 'NOT MET'} (ratio {k / p:.3f}, limit {lim:.3f})")
    # Targets of issue 11 (the sequence models), against the faster of PyTorch eager and
    # Keras 3 (JAX).
    def faster(case, w):
        v = [get(case, w, fw) for fw in ("torch", "keras")]
        v = [x for x in v if x is not None]
        return min(v) if v else None
    checks = [
        ("LSTM train step, batch 32, length 32 ≤ 0.7× the faster peer",
         get("lstm32s32", "train", "kiln"), faster("lstm32s32", "train"), 0.7),
        ("LSTM forward, batch 32, length 32 ≤ 0.7× the faster peer",
         get("lstm32s32", "forward", "kiln"), faster("lstm32s32", "forward"), 0.7),
        ("LSTM forward, batch 1, length 32 ≤ 0.3× PyTorch eager",
         get("lstm1s32", "forward", "kiln"), get("lstm1s32", "forward", "torch"), 0.3),
    ]
    for seq in (32, 128):
        case = f"attention32s{seq}"
        checks += [
            (f"attention train step, batch 32, length {seq} ≤ 0.6× the faster peer",
             get(case, "train", "kiln"), faster(case, "train"), 0.6),
            (f"attention forward, batch 32, length {seq} ≤ 0.7× the faster peer",
             get(case, "forward", "kiln"), faster(case, "forward"), 0.7),
        ]
    print()
    print("Issue 11 targets (sequence models):")
    for name, k, p, lim in checks:
        if k is None or p is None:
            print(f"  {name}: not measured")
            continue
        ok = k / p <= lim
        print(f"  {name}: {'MET' if ok else 'NOT MET'} (ratio {k / p:.3f}, limit {lim:.3f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"info": info, "threads": a.threads, "rounds": a.rounds, "runs": a.runs,
                       "results": {f"{c}/{w}": v for (c, w), v in results.items()},
                       "per_round": per_round,
                       "peak_rss_mib": rss, "foreign_cpu_pct": foreign_pct,
                       "foreign_share_per_kept_round": disturbed, "discarded_rounds": discarded,
                       "load_before": load0}, f, indent=1)


if __name__ == "__main__":
    main()
