"""chat: talk to the trained LCCC dialogue model in the terminal (reads stdin, so input can be piped).

    python -m stages.chat [--model models/finetune_lccc] [--seed 0] [--top-k 5] [--top-p 1.0]
                          [--temperature 1.0] [--max-new-tokens 32]

Each line is one turn; the model's reply is printed as ``bot> ...`` and both join the dialogue
history. ``/reset`` clears the history (and restarts the seeded sampler), ``/quit`` or end of
input ends the session. Sampling defaults come from the model's ``zhnlp_generation.json``
(the ``finetune_lccc.sampling`` params it was trained with); the same seed and the same inputs
give the same replies. An empty line prints a one-line error and the session goes on; a
missing model directory is a one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from stages.common import ROOT, fail, run, setup_env

PROMPT = "you> "


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.chat", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path("models") / "finetune_lccc"), help="a finetune_lccc model directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=None, help="0 = no top-k cut (default: the model's)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = Path(args.model)
    if not model_dir.is_absolute() and not model_dir.exists():
        model_dir = ROOT / model_dir  # relative to the project root, like the stages' outputs
    if not (model_dir / "config.json").is_file():
        fail(f"no model at {args.model} (train one with `dvc repro finetune_lccc`, or pass --model DIR)")
    if args.temperature is not None and args.temperature <= 0:
        fail("--temperature must be > 0")
    setup_env()

    from zhnlp.tasks.dialogue import ChatSession, load_chat_model

    model, codec, settings = load_chat_model(model_dir)
    overrides = {"top_k": args.top_k, "top_p": args.top_p, "temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    sampling = replace(settings.sampling, **{k: v for k, v in overrides.items() if v is not None})
    if sampling.max_new_tokens >= settings.max_seq_len - 2:
        fail(f"--max-new-tokens must be below {settings.max_seq_len - 2} (the model's max_seq_len - 2)")
    session = ChatSession(model, codec, settings, seed=args.seed, sampling=sampling)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chat with {args.model} (seed {args.seed}); /reset clears the history, /quit ends", file=sys.stderr)
    while True:
        if interactive:
            print(PROMPT, end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            return 0
        text = line.strip()
        if text == "/quit":
            return 0
        if text == "/reset":
            session.reset()
            print("(history cleared)", flush=True)
            continue
        if not text:
            print("error: empty input; type a message, /reset or /quit", file=sys.stderr, flush=True)
            continue
        print(f"bot> {session.reply(text)}", flush=True)


if __name__ == "__main__":
    run(main)  # a bad sampling option (e.g. --top-p 2) is a one-line error too
