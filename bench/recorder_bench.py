"""What a kernel's recorder costs (keepalive_jupyter.iopub_recorder): its memory, and its CPU while
a cell prints 1,000 lines a second, against a floor measured in the same run, the kernel alone.

A kernel is started as keepalive's own kernel manager starts one (no parent poller). Each round:
the cell prints --rate numbered lines a second for --seconds with nobody subscribed to its IOPub
(the floor: the kernel's own CPU), then the same with the kernel's recorder running (the recorder's
CPU, the kernel's again, the journal's growth), and, in this process, a reader that catches up with
the journal every second as the Jupyter server's record does (its CPU). Memory: the recorder's RSS
and USS (USS: what it alone holds, the cost of one more kernel), idle and after the run, beside the
kernel's. Prints a table; --json writes the figures (with the commit and the machine).

    .venv/bin/python bench/recorder_bench.py [--rounds 2] [--seconds 15] [--rate 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from jupyter_client import KernelManager

sys.path.insert(0, str(Path(__file__).parents[1]))
from provenance import stamp  # noqa: E402  (beside this script)
from keepalive_jupyter import journal  # noqa: E402
from keepalive_jupyter.iopub_recorder import ensure_recorder, recorder_status  # noqa: E402

MIB = 1024 * 1024
#: After the cell's reply, how long its last lines may take to be published and recorded (s).
SETTLE = 2.0
KERNEL_ID = "bench"


def paced_cell(rate: int, seconds: float) -> str:
    """A cell printing ``rate`` numbered lines a second, each its own message (flush)."""
    return (
        "import time\n"
        f"start, n = time.perf_counter(), {int(rate * seconds)}\n"
        "for i in range(n):\n"
        "    print('line', i, flush=True)\n"
        f"    pause = start + (i + 1) / {rate} - time.perf_counter()\n"
        "    if pause > 0:\n"
        "        time.sleep(pause)\n"
    )


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def memory(pid: int) -> dict:
    info = psutil.Process(pid).memory_full_info()
    return {"rss_bytes": info.rss, "uss_bytes": info.uss}


class Bench:
    def __init__(self, folder: Path, rate: int, seconds: float):
        os.environ.pop("JPY_PARENT_PID", None)
        self.folder, self.rate, self.seconds = folder, rate, seconds
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel()
        self.kernel = psutil.Process(self.manager.provisioner.pid)
        self.client = self.manager.client()
        self.client.start_channels(iopub=False, stdin=False, hb=False)
        self.client.kernel_info()
        self.client.get_shell_msg(timeout=60)
        self.reader = journal.JournalReader(journal.journal_path(folder, KERNEL_ID))
        self.record = journal.new_record(KERNEL_ID, journal.DEFAULT_SETTINGS)
        #: the cell's lines in the journal (the record keeps what the IOPub rate limit lets through)
        self.journal_lines = 0

    def run_cell(self, read_journal: bool) -> dict:
        """Run the paced cell; the kernel's CPU over it, and the reader's if ``read_journal``."""
        kernel_before, wall_before = cpu_seconds(self.kernel), time.perf_counter()
        msg_id = self.client.execute(paced_cell(self.rate, self.seconds))
        reader_cpu, reads = 0.0, 0
        while True:
            try:
                reply = self.client.get_shell_msg(timeout=1.0)
            except Exception:  # queue.Empty: a second passed, the server's record would look now
                reply = None
            if read_journal:
                started = time.thread_time()
                self._catch_up()
                reader_cpu += time.thread_time() - started
                reads += 1
            if reply is not None and reply["parent_header"].get("msg_id") == msg_id:
                break
        wall = time.perf_counter() - wall_before
        # The reply comes before the kernel's IOPub thread has sent the last lines: the CPU of
        # both the kernel and the recorder is taken SETTLE seconds later, per second of the cell.
        settle_until = time.perf_counter() + SETTLE
        while time.perf_counter() < settle_until:
            time.sleep(0.1)
            if read_journal:
                started = time.thread_time()
                self._catch_up()
                reader_cpu += time.thread_time() - started
        kernel_cpu = cpu_seconds(self.kernel) - kernel_before
        lines = int(self.rate * self.seconds)
        return {"wall_s": wall, "kernel_cores": kernel_cpu / wall, "kernel_us_per_line": 1e6 * kernel_cpu / lines,
                "reader_cores": reader_cpu / wall if read_journal else None, "reads": reads}

    def _catch_up(self) -> None:
        from_start, entries = self.reader.read()
        self.journal_lines += sum(e["content"]["text"].count("\n") for e in entries
                                  if e.get("k") == "iopub" and e["header"]["msg_type"] == "stream")
        if from_start:
            self.record = journal.replay(KERNEL_ID, journal.DEFAULT_SETTINGS, entries)
        else:
            for entry in entries:
                journal.apply(self.record, entry)

    def plain_subscriber(self) -> threading.Event:
        """A bare IOPub subscriber in a thread (what the server's own subscription was before the
        recorder): set the event to stop it."""
        import zmq

        stop, subscribed = threading.Event(), threading.Event()
        info = json.loads(Path(self.manager.connection_file).read_text())

        def drain() -> None:
            socket = zmq.Context.instance().socket(zmq.SUB)
            socket.setsockopt(zmq.SUBSCRIBE, b"")
            socket.setsockopt(zmq.SUBSCRIBE, b"bench-subscriber")  # welcomed (see iopub_recorder)
            socket.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
            while not stop.is_set():
                if socket.poll(100):
                    socket.recv_multipart()
                    subscribed.set()
            socket.close(0)

        threading.Thread(target=drain, daemon=True).start()
        assert subscribed.wait(30), "the plain subscriber was never welcomed"
        return stop

    def start_recorder(self) -> psutil.Process:
        ok = asyncio.run(ensure_recorder(KERNEL_ID, self.manager.connection_file, self.kernel.pid, self.folder,
                                         timeout=30))
        assert ok, "the recorder did not subscribe"
        return psutil.Process(recorder_status(self.folder, KERNEL_ID)["recorder_pid"])

    def stop_recorder(self, recorder: psutil.Process) -> None:
        recorder.send_signal(signal.SIGTERM)
        recorder.wait(30)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


#: What this bench runs: a change to these makes its commit "+changes".
MEASURED = ["keepalive_jupyter/journal.py", "keepalive_jupyter/iopub_recorder.py", "keepalive_jupyter/executions.py",
            "bench/recorder_bench.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="floor + recorder runs (default 2)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long the cell prints (default 15)")
    parser.add_argument("--rate", type=int, default=1000, help="lines a second (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures: dict = {**stamp(MEASURED),
                     "rate": args.rate, "seconds": args.seconds, "floor": [], "subscribed": [], "recorded": []}
    with tempfile.TemporaryDirectory(prefix="recorder-bench-") as temporary:
        folder = journal.prepare_dir(Path(temporary) / "executions")
        bench = Bench(folder, args.rate, args.seconds)
        try:
            for _ in range(args.rounds):
                figures["floor"].append(bench.run_cell(read_journal=False))
                stop = bench.plain_subscriber()
                figures["subscribed"].append(bench.run_cell(read_journal=False))
                stop.set()
                recorder = bench.start_recorder()
                recorder_idle = memory(recorder.pid)
                path = journal.journal_path(folder, KERNEL_ID)
                size_before = path.stat().st_size
                recorder_before = cpu_seconds(recorder)
                run = bench.run_cell(read_journal=True)
                recorder_cpu = cpu_seconds(recorder) - recorder_before
                run["recorder_cores"] = recorder_cpu / run["wall_s"]
                run["recorder_us_per_line"] = 1e6 * recorder_cpu / (args.rate * args.seconds)
                run["journal_bytes_per_s"] = (path.stat().st_size - size_before) / run["wall_s"]
                run["recorder_idle"] = recorder_idle
                run["recorder_after"] = memory(recorder.pid)
                run["kernel"] = memory(bench.kernel.pid)
                bench.stop_recorder(recorder)
                run["lines_in_journal"], bench.journal_lines = bench.journal_lines, 0
                figures["recorded"].append(run)
            # Compaction (not reached in a short run: the default threshold is 16 MiB): its
            # throughput on this run's journal, and what it costs a printer at this rate for good.
            path = journal.journal_path(folder, KERNEL_ID)
            size, started = path.stat().st_size, time.process_time()
            journal.compact(path, KERNEL_ID, journal.DEFAULT_SETTINGS)
            figures["compaction"] = {"journal_bytes": size, "cpu_s": time.process_time() - started,
                                     "snapshot_bytes": path.stat().st_size}
        finally:
            bench.close()

    median = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    floor_kernel = median(figures["floor"], "kernel_cores")
    rec = figures["recorded"]
    summary = {
        "floor_kernel_cores": floor_kernel,
        "kernel_cores_with_recorder": median(rec, "kernel_cores"),
        "recorder_cores": median(rec, "recorder_cores"),
        "reader_cores": median(rec, "reader_cores"),
        "floor_kernel_us_per_line": median(figures["floor"], "kernel_us_per_line"),
        "subscribed_kernel_us_per_line": median(figures["subscribed"], "kernel_us_per_line"),
        "kernel_us_per_line_with_recorder": median(rec, "kernel_us_per_line"),
        "recorder_us_per_line": median(rec, "recorder_us_per_line"),
        "recorder_rss_bytes": statistics.median(r["recorder_after"]["rss_bytes"] for r in rec),
        "recorder_uss_bytes": statistics.median(r["recorder_after"]["uss_bytes"] for r in rec),
        "recorder_idle_uss_bytes": statistics.median(r["recorder_idle"]["uss_bytes"] for r in rec),
        "kernel_rss_bytes": statistics.median(r["kernel"]["rss_bytes"] for r in rec),
        "journal_bytes_per_s": median(rec, "journal_bytes_per_s"),
    }
    compaction = figures["compaction"]
    # A journal is compacted when it doubles: each compaction reads about twice what it writes,
    # so once the record is at its bound, every byte the kernel adds is read about twice more.
    throughput = compaction["journal_bytes"] / max(compaction["cpu_s"], 1e-9)
    summary["compaction_bytes_per_cpu_s"] = throughput
    summary["compaction_cores_amortized"] = 2 * summary["journal_bytes_per_s"] / throughput
    figures["summary"] = summary
    print(f"keepalive recorder bench ({figures['machine']['cores']} cores, {figures['machine']['cpu']}, "
          f"commit {figures['commit']}): a cell printing {args.rate} lines/s for {args.seconds:g} s, "
          f"{args.rounds} rounds, medians")
    # CPU per line as well as per second: on a loaded machine the kernel may not keep the pace
    print(f"    the kernel alone (floor)                 {floor_kernel:6.3f} cores, "
          f"{summary['floor_kernel_us_per_line']:5.0f} us CPU per line")
    print(f"    the kernel, one plain subscriber         {median(figures['subscribed'], 'kernel_cores'):6.3f} cores, "
          f"{summary['subscribed_kernel_us_per_line']:5.0f} us per line (as the server's own subscription was)")
    print(f"    the kernel, with its recorder            {summary['kernel_cores_with_recorder']:6.3f} cores, "
          f"{summary['kernel_us_per_line_with_recorder']:5.0f} us per line")
    print(f"    the recorder process                     {summary['recorder_cores']:6.3f} cores, "
          f"{summary['recorder_us_per_line']:5.0f} us per line ({summary['recorder_us_per_line'] / summary['floor_kernel_us_per_line']:.2f}x the floor's)")
    print(f"    the server's reading of the journal      {summary['reader_cores']:6.3f} cores")
    print(f"    journal growth                           {summary['journal_bytes_per_s'] / 1024:6.0f} KiB/s "
          f"(compacted past {journal.COMPACT_BYTES / MIB:.0f} MiB)")
    print(f"    recorder memory: RSS {summary['recorder_rss_bytes'] / MIB:.1f} MiB, USS "
          f"{summary['recorder_uss_bytes'] / MIB:.1f} MiB after the run ({summary['recorder_idle_uss_bytes'] / MIB:.1f} "
          f"MiB idle); the kernel's RSS {summary['kernel_rss_bytes'] / MIB:.1f} MiB")
    print(f"    compaction: {throughput / MIB:.1f} MiB of journal per CPU second; amortized at this rate "
          f"{summary['compaction_cores_amortized']:.3f} cores (each byte read about twice more)")
    print(f"    lines in the journal: {[r['lines_in_journal'] for r in rec]} of {int(args.rate * args.seconds)} each run")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
