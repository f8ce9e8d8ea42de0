"""`make bench`: chimed's figures as JSON, each beside a baseline measured in the same run.

Run: python -m bench [--joins 20] [--messages 1000] [--sessions 10] [--out FILE]
                    [--no-browser | --browser-only] [--steady-seconds 20]
                    [--no-audio | --audio-only] [--audio-bursts 15] [--audio-sessions 1,10,25]
                    [--no-video | --video-only] [--video-steady-seconds 8]
                    [--video-latency-seconds 10] [--video-receivers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import audio, browser, core, video, video_browser


def main() -> int:
    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--joins", type=int, default=20)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=10)
    p.add_argument("--out", default="bench/results/latest.json")
    p.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also compare with the official web client in headless Chromium (default: on)",
    )
    p.add_argument("--browser-only", action="store_true", help="only the browser comparison")
    p.add_argument(
        "--steady-seconds", type=float, default=20.0, help="CPU window of the browser comparison"
    )
    p.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the audio figures: latency, active speaker, density (~3 min; default: on)",
    )
    p.add_argument("--audio-only", action="store_true", help="only the audio figures")
    p.add_argument("--audio-bursts", type=int, default=15)
    p.add_argument("--audio-sessions", default="1,10,25")
    p.add_argument("--audio-steady-seconds", type=float, default=15.0)
    p.add_argument(
        "--video",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the video figures, with the Chromium comparison unless --no-browser "
        "(~4 min; default: on)",
    )
    p.add_argument("--video-only", action="store_true", help="only the video figures")
    p.add_argument("--video-steady-seconds", type=float, default=8.0, help="each CPU window")
    p.add_argument("--video-latency-seconds", type=float, default=10.0)
    p.add_argument("--video-receivers", type=int, default=2, help="receiving sessions")
    p.add_argument(
        "--video-feed-fps", type=float, default=60.0, help="numbered frames fed for the latency"
    )
    args = p.parse_args()
    if args.audio_only:
        args.browser = False
    only = args.browser_only or args.audio_only or args.video_only
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    if not only:
        results.update(asyncio.run(core.run(args.joins, args.messages, args.sessions)))
    if (args.browser and not args.video_only) or args.browser_only:
        results["browser_comparison"] = asyncio.run(browser.run(args.steady_seconds, args.sessions))
    if (args.audio and not only) or args.audio_only:
        counts = [int(n) for n in args.audio_sessions.split(",")]
        results["audio"] = asyncio.run(
            audio.run(args.audio_bursts, args.audio_steady_seconds, counts)
        )
    if (args.video and not only) or args.video_only:
        results["video"] = asyncio.run(
            video.run(
                args.video_steady_seconds,
                args.video_latency_seconds,
                args.video_receivers,
                args.video_feed_fps,
            )
        )
        if args.browser:
            comparison = asyncio.run(video_browser.run(args.video_steady_seconds))
            results["video"]["browser_comparison"] = comparison
            results["video"]["figures"].update(comparison.get("figures", {}))
    text = json.dumps(results, indent=2)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
