"""Peak memory of reading a checkpoint's replay back when a run resumes, with Lightning's reading
(``TorchCheckpointIO``: the whole file into memory) and with the trainer's (``AtomicCheckpointIO``:
the replay's episodes memory-mapped), each in a fresh process. A checkpoint holding a replay of
``--replay-mb`` MB of episodes is written to a temporary folder, then each reader loads it and the
replay copies the episodes into its storage, as a resume does.

Figures: the peak of the process's anonymous memory (what only swap or the OOM killer can take
back) and of its resident memory (which also counts the mapped file's pages: page cache, which
the kernel drops under pressure), sampled every 5 ms, less the process's memory before reading.

    python scripts/resume_memory.py --replay-mb 1200
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from tensordict import TensorDict

from lightning_marl.checkpoint_files import DATA_STATE, REPLAY
from lightning_marl.data.replay import EpisodeReplay

STEPS, AGENTS, OBS = 151, 8, 128  # SMACLite 3s5z's episode limit + 1, agents, observation size
READERS = ("lightning", "lightning_marl")


def memory_mb() -> dict[str, float]:
    """RssAnon and VmRSS of this process, MB (Linux: /proc/self/status)."""
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("RssAnon", "VmRSS"):
                found[key] = int(value.split()[0]) / 1024
    return found


def write_checkpoint(path: Path, replay_mb: float) -> int:
    """A checkpoint holding only a replay of ``replay_mb`` MB of observations; returns the episodes held."""
    episodes = max(1, int(replay_mb * 2**20 / (STEPS * AGENTS * OBS * 4)))
    replay = EpisodeReplay(episodes, 32, False, 0.6, 0.4, 1)
    replay.extend(TensorDict({"obs": torch.randn(episodes, STEPS, AGENTS, OBS),
                              "filled": torch.ones(episodes, STEPS, dtype=torch.bool)}, batch_size=[episodes, STEPS]))
    torch.save({DATA_STATE: {REPLAY: replay.state_dict()}}, path)
    return episodes


def read(path: Path, reader: str, episodes: int) -> dict[str, float]:
    """Load ``path`` with ``reader`` and put its replay back; the peaks above the memory before."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lightning_marl.checkpointing import AtomicCheckpointIO

    io = TorchCheckpointIO() if reader == "lightning" else AtomicCheckpointIO()
    replay = EpisodeReplay(episodes, 32, False, 0.6, 0.4, 1)
    before, peak, done = memory_mb(), memory_mb(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = memory_mb()
            for key in peak:
                peak[key] = max(peak[key], now[key])
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    checkpoint = io.load_checkpoint(path, weights_only=True)
    replay.load_state_dict(checkpoint[DATA_STATE][REPLAY])
    del checkpoint
    time.sleep(0.05)
    done.set()
    sampler.join()
    assert len(replay) == episodes
    return {key: peak[key] - before[key] for key in peak} | {"after": memory_mb()["VmRSS"] - before["VmRSS"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay-mb", type=float, default=1200.0, help="size of the replay's episodes, MB")
    parser.add_argument("--read", nargs=3, metavar=("PATH", "READER", "EPISODES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read:  # one reader in this fresh process
        print(json.dumps(read(Path(args.read[0]), args.read[1], int(args.read[2]))))
        return
    if not Path("/proc/self/status").is_file():
        sys.exit("error: this benchmark reads /proc/self/status (Linux only)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.ckpt"
        episodes = write_checkpoint(path, args.replay_mb)
        print(f"checkpoint: {episodes} episodes of {STEPS} steps x {AGENTS} agents x {OBS} floats, "
              f"{path.stat().st_size / 2**20:.0f} MB")
        peaks = {}
        for reader in READERS:
            out = subprocess.run([sys.executable, __file__, "--read", str(path), reader, str(episodes)],
                                 capture_output=True, text=True, check=True).stdout
            peaks[reader] = json.loads(out.strip().splitlines()[-1])
            p = peaks[reader]
            print(f"{reader:<15} peak anonymous +{p['RssAnon']:7.0f} MB   peak resident +{p['VmRSS']:7.0f} MB   "
                  f"resident once restored +{p['after']:7.0f} MB")
    ratio = peaks["lightning_marl"]["RssAnon"] / peaks["lightning"]["RssAnon"]
    print(f"peak anonymous memory, lightning_marl / lightning: {ratio:.2f}")


if __name__ == "__main__":
    main()
