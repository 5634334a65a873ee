"""Train and evaluate the tiny presets (SALMONN, LTU-AS, MoWE paper) beside base-only on the local corpus.

Every system shares the corpus, the tokenizer, the ASR-pretrained frozen strong encoder (see ``mowe.demo``),
the data order, the number of steps, the batch size and the learning rate; only the architecture differs.
Prints the per-task table and, as its last line, a JSON object with every system's metrics. ``--write``
also puts the table into ``benchmarks/RESULTS.md`` between its preset markers.

    python benchmarks/presets_on_corpus.py --steps 300 --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="presets_out")
    ap.add_argument("--size", type=int, default=1200)
    ap.add_argument("--strong-steps", type=int, default=250)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--systems", default="base-only,MoWE,SALMONN,LTU-AS")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.size, args.strong_steps, args.steps, args.batch_size = 80, 4, 4, 4
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    from mowe.demo import prepare, train_and_evaluate
    from mowe.evaluation.evaluate import write_report
    from mowe.presets import base_only, ltu_as, mowe_paper, salmonn

    t0 = time.time()
    prep = prepare(args.out, size=args.size, strong_steps=args.strong_steps, batch_size=args.batch_size,
                   seed=args.seed, progress=False)
    builders = {"base-only": base_only, "MoWE": mowe_paper, "SALMONN": salmonn, "LTU-AS": ltu_as}
    results = {}
    for name in args.systems.split(","):
        preset = builders[name](tiny=True, audio_token_id=prep.processor.audio_token_id,
                                vocab_size=len(prep.tokenizer))
        results[name], _ = train_and_evaluate(name, preset.config, strong=prep.strong, train=prep.train,
                                              test=prep.test, processor=prep.processor, steps=args.steps,
                                              batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                              out_dir=args.out, progress=False)
    table = write_report(results, args.out, stem="presets")
    minutes = (time.time() - t0) / 60
    print(table)
    if args.write:
        path = os.path.join(os.path.dirname(__file__), "RESULTS.md")
        text = open(path).read() if os.path.exists(path) else "# Results\n"
        block = (f"<!-- BEGIN PRESETS -->\nSettings: {vars(args)}; {minutes:.1f} min on {os.cpu_count()} CPU "
                 f"cores ({platform.processor() or platform.machine()}), {time.strftime('%Y-%m-%d')}.\n\n"
                 f"{table}\n<!-- END PRESETS -->")
        if "<!-- BEGIN PRESETS -->" in text:
            text = re.sub(r"<!-- BEGIN PRESETS -->.*<!-- END PRESETS -->", lambda _: block, text, flags=re.DOTALL)
        else:
            text += "\n## Tiny presets on the local corpus\n\n" + block + "\n"
        with open(path, "w") as f:
            f.write(text)
    print(json.dumps({"systems": {k: v.metrics for k, v in results.items()}, "minutes": round(minutes, 2),
                      "settings": vars(args)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
