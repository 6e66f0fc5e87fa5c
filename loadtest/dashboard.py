"""The Grafana dashboard (k8s/base/dashboards/athene.json), rendered from a real scrape.

    python -m loadtest.dashboard --out docs/observability/dashboard.png   (about 6 minutes)

It starts the CPU stack (serve_config.cpu.yaml, with API keys on, so refusals show), a real
Prometheus (Debian's `prometheus` package: `apt-get install prometheus`) scraping Ray's
metrics endpoint every 2 s, and drives a few minutes of mixed traffic: streams and
non-streamed answers, math and small talk, a long shared document (prefix-cache hits),
callers without a key and requests for an unknown model. Then it runs every panel's own
PromQL through Prometheus over that window and draws the panels in the dashboard's layout
with matplotlib: the dashboard as Grafana would show it, without Grafana (which no package
registry reachable here ships).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtest.fake_cluster import free_port
from loadtest.local_stack import cpu_app_args, local_stack
from serve_app.access import digest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "k8s" / "base" / "dashboards" / "athene.json"
KEY = "sk-athene-dashboard"
RATE_INTERVAL = "30s"  # what Grafana's $__rate_interval is at a 2 s scrape and this zoom
STEP_S = 5
# (seconds, concurrent users): a ramp up, a peak, a lull.
PHASES = [(45, 1), (60, 4), (60, 8), (45, 2), (30, 0)]
PROMPTS = [
    "How many r's are in the word strawberry?",
    "What is 17 times 23?",
    "Hello there! How are you today?",
    "Write a haiku about the sea.",
    "If a train leaves at 3pm going 60 mph, when has it covered 150 miles?",
    "The lighthouse keeper wrote in his log every evening. " * 60 + "Summarize.",
]


def keyed_args(workdir: Path) -> dict[str, Any]:
    """The CPU app's args with API keys on (one key, KEY), so refusals show."""
    args = cpu_app_args()
    keys = workdir / "keys.yaml"
    keys.write_text(yaml.safe_dump([{"id": "dashboard", "sha256": digest(KEY)}]))
    args["access"] = {"keys_file": str(keys)}
    return args


@contextmanager
def prometheus(workdir: Path, metrics_url: str) -> Iterator[str]:
    """A Prometheus scraping Ray's endpoint every 2 s; its HTTP API's URL."""
    target = metrics_url.removeprefix("http://").removesuffix("/metrics")
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("needs Prometheus on PATH: apt-get install prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "2s"},
                "scrape_configs": [
                    {
                        "job_name": "ray",
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def traffic(url: str) -> None:
    """PHASES of closed-loop users; each request a draw from the mix."""
    rng = random.Random(0)
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one() -> None:
            draw = rng.random()
            headers = {"Authorization": f"Bearer {KEY}"} if draw > 0.05 else {}  # 5%: no key
            body: dict[str, Any] = {
                "model": "athene-v2-chat" if draw > 0.1 or draw <= 0.05 else "gpt-4",
                "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                "max_tokens": rng.choice([16, 32, 64]),
                "stream": draw > 0.3,
            }
            try:
                async with client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as response:
                    await response.aread()
            except httpx.HTTPError as error:  # shown on the dashboard, not fatal here
                print(f"request failed: {error!r}", file=sys.stderr)

        for seconds, users in PHASES:
            until = time.monotonic() + seconds

            async def user(until: float = until) -> None:
                while time.monotonic() < until:
                    await one()

            await asyncio.gather(*(user() for _ in range(users)), asyncio.sleep(seconds))


def query_range(api: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$node_group", ".*")
    answer = httpx.get(
        f"{api}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": STEP_S},
        timeout=30,
    ).json()
    if answer["status"] != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace(f"{{{{{key}}}}}", value)
    return template


def collect(dashboard: dict[str, Any], api: str, start: float, end: float) -> dict[str, Any]:
    """Every panel's series over the window: what the picture is drawn from (kept as JSON)."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        lines = []
        for target in panel["targets"]:
            for series in query_range(api, target["expr"], start, end):
                points = [(float(t) - start, float(v)) for t, v in series["values"]]
                points = [(t, v) for t, v in points if v == v]  # NaN: no data there
                if points:
                    label = legend(target["legendFormat"], series["metric"])
                    lines.append({"label": label, "points": points})
        unit = panel["fieldConfig"]["defaults"].get("unit")
        panels.append(
            {"title": panel["title"], "grid": panel["gridPos"], "unit": unit, "lines": lines}
        )
    return {"title": dashboard["title"], "seconds": end - start, "panels": panels}


def draw(data: dict[str, Any], out: Path) -> None:
    """The panels in the dashboard's grid (24 columns), each line one series of its query."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    rows = sorted({p["grid"]["y"] for p in data["panels"]})
    figure = Figure(figsize=(20, 4.2 * len(rows) + 0.8))
    FigureCanvasAgg(figure)
    figure.suptitle(
        f"{data['title']}: rendered from Prometheus over {data['seconds']:.0f} s of traffic"
        " on the CPU stack",
        fontsize=15,
        fontweight="bold",
    )
    grid = figure.add_gridspec(
        len(rows), 24, left=0.04, right=0.99, top=0.95, bottom=0.03, wspace=4, hspace=0.35
    )
    for panel in data["panels"]:
        pos = panel["grid"]
        axes = figure.add_subplot(grid[rows.index(pos["y"]), pos["x"] : pos["x"] + pos["w"]])
        for line in panel["lines"]:
            times, values = zip(*line["points"], strict=True)
            axes.plot(times, values, label=line["label"])
        axes.set_title(panel["title"], fontsize=11, fontweight="bold", loc="left")
        if panel["unit"] == "percentunit":
            axes.yaxis.set_major_formatter(PercentFormatter(1.0))
        elif panel["unit"] in ("s", "reqps"):
            axes.set_ylabel("seconds" if panel["unit"] == "s" else "per second", fontsize=9)
        axes.set_xlim(0, data["seconds"])
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=8)
        if axes.lines:
            axes.legend(fontsize=7, loc="upper left")
        else:
            axes.text(0.5, 0.5, "no data", ha="center", transform=axes.transAxes, color="grey")
    figure.savefig(out, dpi=80)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.dashboard", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument(
        "--redraw", action="store_true", help="draw again from the series saved beside --out"
    )
    options = parser.parse_args(argv)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    saved = options.out.with_suffix(".json")  # the series the picture is drawn from
    if not options.redraw:
        dashboard = json.loads(DASHBOARD.read_text())
        workdir = Path(tempfile.mkdtemp(prefix="dashboard-"))
        try:
            with (
                local_stack(keyed_args(workdir)) as (url, metrics_url),
                prometheus(workdir, metrics_url) as api,
            ):
                start = time.time()
                asyncio.run(traffic(url))
                end = time.time()
                time.sleep(4)  # the last scrape
                saved.write_text(json.dumps(collect(dashboard, api, start, end)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    draw(json.loads(saved.read_text()), options.out)
    print(f"==> {options.out} (series: {saved})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
