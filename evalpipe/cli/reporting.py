"""``evalpipe compare``, ``comment``, ``gate`` and ``dashboard``: verdicts and reports."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evalpipe.cli.common import add, count, points, probability, store_arg, tokens


def cmd_compare(args: argparse.Namespace) -> int:
    from evalpipe import api

    comparisons = api.compare(
        args.store,
        args.runs,
        baseline=args.baseline,
        baseline_layout=args.baseline_layout,
        margin=args.margin / 100,
        alpha=args.alpha,
        min_n=args.min_n,
        force=args.force,
        shard_period=args.shard_period,
        token_margin=args.token_margin,
        token_reference=args.token_reference,
    )
    if args.json:
        data = [api.comparison_json(c) for c in comparisons]
        print(json.dumps(data[0] if len(data) == 1 else data))
    else:
        print("\n\n".join(api.format_comparison(c) for c in comparisons))
    return 0


def cmd_comment(args: argparse.Namespace) -> int:
    from evalpipe import api

    print(
        api.comment(
            args.store,
            args.repo,
            args.pr,
            tag=args.tag,
            run_ids=args.run,
            baseline_layout=args.baseline_layout,
            dashboard_url=args.dashboard_url,
            token_env=args.token_env,
            github_url=args.github_url,
            dry_run=args.dry_run,
            marker_key=args.marker_key,
        )
    )
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from evalpipe import api

    decision = api.gate(
        args.store,
        args.policy,
        tag=args.tag,
        select=args.select,
        junit=args.junit,
        markdown=args.markdown,
    )
    print(json.dumps(api.gate_json(decision)) if args.json else api.format_gate(decision))
    return decision.exit_code


def cmd_dashboard(args: argparse.Namespace) -> int:
    from evalpipe import api

    summary = api.dashboard(
        args.store,
        args.out,
        pairs=args.pair,
        title=args.title,
        shard_period=args.shard_period,
        force=args.force,
    )
    print(
        f"{summary.pages} pages ({summary.runs} runs, {summary.comparisons} comparisons) "
        f"in {summary.seconds:.1f} s; {summary.written} pages written and "
        f"{summary.computed} comparisons computed this time (the rest were unchanged)",
        file=sys.stderr,
    )
    if summary.kept:
        print(
            f"kept {len(summary.kept)} edited page(s) this render no longer makes (yours now; "
            f"remove them if unwanted): {', '.join(str(args.out) + '/' + p for p in summary.kept)}",
            file=sys.stderr,
        )
    print(summary.index)
    return 0


def register(sub: Any) -> None:
    _compare(sub)
    _comment(sub)
    _gate(sub)
    _dashboard(sub)


def _compare(sub: Any) -> None:
    cmp = add(
        sub,
        "compare",
        cmd_compare,
        "paired comparison of runs with their baselines: table, CI, McNemar, MDE, verdict, flips",
        "evalpipe compare RUN_ID --baseline auto --json",
    )
    cmp.add_argument("runs", nargs="+", help="run ids (several: Holm-adjusted together)")
    cmp.add_argument(
        "--baseline",
        default="auto",
        help="baseline run id, or auto: the latest finished run that pairs (default)",
    )
    cmp.add_argument(
        "--baseline-layout", help="with auto: pair with this layout instead of the non-CP one"
    )
    cmp.add_argument("--margin", type=points, default=1.0, help="in points (default 1.0)")
    cmp.add_argument("--alpha", type=probability, default=0.05)
    cmp.add_argument("--min-n", type=count, default=100, help="fewer paired items: inconclusive")
    cmp.add_argument(
        "--force", action="store_true", help="compare runs that differ in prompts, data or model"
    )
    cmp.add_argument(
        "--shard-period",
        type=tokens,
        metavar="TOKENS",
        help="locate prompt lengths relative to multiples of this many tokens (default: "
        "dcp x interleave of the run's layout)",
    )
    cmp.add_argument(
        "--token-margin",
        metavar="TAU",
        help="token tolerance τ: KL per token in excess of the noise floor a path may show and "
        "be ok; TAU (both paths), decode=TAU,forced=TAU, or Nx (N × the upper bound of the "
        "--token-reference pair); default 0.002",
    )
    cmp.add_argument(
        "--token-reference",
        metavar="RUN[:BASELINE]",
        help="with --token-margin Nx: a known-benign pair of the same model and task (e.g. a "
        "tp2 run; its baseline: given, or found as for --baseline auto)",
    )
    cmp.add_argument("--json", action="store_true")
    store_arg(cmp)


def _comment(sub: Any) -> None:
    com = add(
        sub,
        "comment",
        cmd_comment,
        "post (or update) one sticky PR comment with the verdicts of the PR's runs",
        "evalpipe comment --repo vllm-project/vllm-ascend --pr 1234 --dashboard-url URL",
    )
    com.add_argument("--repo", required=True, help="OWNER/NAME")
    com.add_argument("--pr", type=int, required=True)
    com.add_argument("--tag", help="compare the runs with this tag (default: pr-N)")
    com.add_argument("--run", action="append", default=[], help="compare these runs instead")
    com.add_argument("--baseline-layout", help="pair with this layout instead of the non-CP one")
    com.add_argument("--dashboard-url")
    com.add_argument("--token-env", default="GITHUB_TOKEN", help="env var holding the token")
    com.add_argument("--github-url", help="API base URL (GitHub Enterprise; $GITHUB_API_URL)")
    com.add_argument("--marker-key", help="several evalpipe comments per PR: one per key")
    com.add_argument("--dry-run", action="store_true", help="print the body, send nothing")
    store_arg(com)


def _gate(sub: Any) -> None:
    gate = add(
        sub,
        "gate",
        cmd_gate,
        "release gate: exit 0 pass, 1 drift/failed, 2 incomplete (run or baseline missing), "
        "3 bad policy or usage, 4 store cannot be opened or read",
        "evalpipe gate --policy examples/release.yaml --tag rc1 --junit gate.xml",
    )
    gate.add_argument("--policy", required=True, help="policy YAML (see examples/release.yaml)")
    gate.add_argument(
        "--select", choices=["latest"], default=None, help="newest finished matching runs (default)"
    )
    gate.add_argument("--tag", help="runs tagged with `evalpipe run … --tag TAG` instead")
    gate.add_argument(
        "--junit", metavar="FILE", help="write JUnit XML (a test case per comparison)"
    )
    gate.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    gate.add_argument("--json", action="store_true", help="print the decision as JSON")
    store_arg(gate)


def _dashboard(sub: Any) -> None:
    dash = add(
        sub,
        "dashboard",
        cmd_dashboard,
        "render the store into a static HTML dashboard (offline; open index.html from disk)",
        "evalpipe dashboard --out site --pair tp2=tp1",
    )
    dash.add_argument(
        "--out", default="evalpipe-dashboard", help="directory (default ./evalpipe-dashboard)"
    )
    dash.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="LAYOUT=BASELINE",
        help="also compare a non-CP layout with another (repeatable), e.g. tp2=tp1",
    )
    dash.add_argument(
        "--shard-period",
        type=tokens,
        metavar="TOKENS",
        help="shard-boundary panel for every comparison, at multiples of this many tokens "
        "(default: DCP runs only, at their dcp x interleave)",
    )
    dash.add_argument("--title", help="page title (default: evalpipe dashboard)")
    dash.add_argument(
        "--force",
        action="store_true",
        help="render into a non-empty folder no earlier render wrote (its files are kept; "
        "those named like the dashboard's pages are overwritten)",
    )
    store_arg(dash)
