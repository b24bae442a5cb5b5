"""Subprocess entry of the cost model's traffic count: reads scaled cases as JSON on stdin,
writes their per-launch counts as JSON on stdout. Needs TRITON_INTERPRET=1 in its environment."""
import json
import sys


def main() -> None:
    from .interpreter_speed import install

    install()
    from .cases import Case
    from .model import ScaledCase, count_scaled

    out = []
    for case, *rest in json.loads(sys.stdin.read()):
        out.append(count_scaled(ScaledCase(Case(**case), *rest)))
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
