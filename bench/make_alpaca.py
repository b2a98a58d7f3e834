"""Write N generated Alpaca-schema records (instruction, input, output) for the fine-tune benchmark:

    python bench/make_alpaca.py OUT_DIR [--records 1024] [--val 16] [--seed 0]

OUT_DIR gets train.json and val.json (the layout of data.finetune.source: path). Sentences are drawn from the
embedded records' words, with lengths that give a mean of about 220 tokens a record and a few over 512,
as the shared reference benchmark's data. Deterministic for a seed.
"""

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # also where llmhpc is not pip-installed
from llmhpc.sources import embedded  # noqa: E402


def words() -> list[str]:
    train, val = embedded.finetune_records()
    return sorted({w for r in train + val for text in r.values() for w in text.split()})


def sentence(rng: random.Random, pool: list[str], n: int) -> str:
    return " ".join(rng.choice(pool) for _ in range(n)).capitalize() + "."


def record(rng: random.Random, pool: list[str]) -> dict:
    long = rng.random() < 0.02  # a few past max_seq_length, to be truncated as real data is
    out_words = rng.randint(300, 420) if long else int(rng.triangular(30, 180, 70))
    return {
        "instruction": sentence(rng, pool, rng.randint(6, 24)),
        "input": sentence(rng, pool, rng.randint(10, 60)) if rng.random() < 0.4 else "",
        "output": " ".join(sentence(rng, pool, 12) for _ in range(max(1, out_words // 12))),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--records", type=int, default=1024)
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng, pool = random.Random(args.seed), words()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.json", args.records), ("val.json", args.val)):
        (args.out_dir / name).write_text(json.dumps([record(rng, pool) for _ in range(n)], indent=1) + "\n")
    print(f"{args.records} + {args.val} records in {args.out_dir}")


if __name__ == "__main__":
    main()
