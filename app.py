"""Start the EarthGPT analyst app: ``python app.py [--model NAME|PATH] [--load-4bit|--load-8bit]
[--host 127.0.0.1] [--port 7860] [--auth USER:PASSWORD ...] [--auth-file FILE] [--max-upload-mb 2048]``.

The model loads once, here, before the server starts; nothing heavy happens at import. The app
binds to localhost unless told otherwise (and warns when it is reachable from elsewhere without a
login), sends no analytics and is never shared through a public link. Its security rules (login,
upload limits, per-session folders, which files a session may read) are :mod:`app.security`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from earthgpt.commands import add_quantization_arguments

if TYPE_CHECKING:
    import gradio as gr

    from app.handlers import Engine

DEFAULT_MODEL = "nano"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python app.py", description="Start the EarthGPT analyst app (Gradio, on 127.0.0.1 by default)."
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="preset name (nano, tiny, 7b, 13b) or checkpoint folder (default: %(default)s)")
    add_quantization_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest chat answer in tokens")
    parser.add_argument("--scene-max-new-tokens", type=int, default=512,
                        help="longest answer per window of whole-scene detection (default: %(default)s)")
    parser.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD",
                        help="require a login; repeat for more users (prefer --auth-file: arguments are "
                             "visible to other users of the machine)")
    parser.add_argument("--auth-file", metavar="FILE",
                        help="require a login: one USER:PASSWORD a line; refused when every user may read it")
    parser.add_argument("--max-upload-mb", type=int, default=2048,
                        help="largest file an upload may be, in MB (default: %(default)s)")
    return parser.parse_args(argv)


def load_engine(
    name: str, load_4bit: bool = False, load_8bit: bool = False, max_new_tokens: int = 256,
    scene_max_new_tokens: int = 512,
) -> Engine:
    """Load the model once and wrap it as the app's :class:`app.handlers.Engine`."""
    from app.handlers import Engine
    from earthgpt.inference import UNTRAINED_WARNING, ChatSession, is_untrained_start, load_model
    from earthgpt.scene_detection import DEFAULT_BATCH_SIZE

    model, processor = load_model(name, load_4bit=load_4bit, load_8bit=load_8bit)
    warning = UNTRAINED_WARNING if is_untrained_start(name) else None

    def new_chat(sensor: object = None) -> ChatSession:
        return ChatSession(model, processor, sensor=str(sensor) if sensor else None)

    return Engine(name=name, new_chat=new_chat, max_new_tokens=max_new_tokens,
                  scene_max_new_tokens=scene_max_new_tokens, scene_batch_size=DEFAULT_BATCH_SIZE,
                  warning=warning)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load the model, build the app and serve it until interrupted."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    args = parse_args(argv)
    from app import security

    try:
        users = security.credentials(args.auth, args.auth_file)
        security.launch_options(users, args.max_upload_mb)  # refuses a bad limit before the model loads
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    exposed = security.exposure_warning(args.host, bool(users))
    if exposed:
        print(f"WARNING: {exposed}", file=sys.stderr, flush=True)
    security.use_app_temp_root()
    try:
        engine = load_engine(args.model, args.load_4bit, args.load_8bit, args.max_new_tokens,
                             args.scene_max_new_tokens)
    except (OSError, ValueError, RuntimeError, ImportError) as err:  # ImportError: no bitsandbytes
        print(f"error: cannot load model {args.model!r}: {err}", file=sys.stderr)
        return 2
    if engine.warning:
        print(f"WARNING: {engine.warning}", file=sys.stderr, flush=True)
    print(f"EarthGPT analyst on http://{args.host}:{args.port} (model {engine.name}"
          f"{', login required' if users else ''})", flush=True)
    serve(engine, args, users)
    return 0


def serve(engine: Engine, args: argparse.Namespace, users: Sequence[tuple[str, str]], *,
          block: bool = True) -> gr.Blocks:
    """Build the app for ``engine`` and serve it as ``args`` say: login for ``users`` (none: open)
    and the upload limit. ``block=False`` returns the running app (tests); the caller closes it."""
    from app.memory import start_trimming
    from app.security import launch_options
    from app.ui import build, theme

    start_trimming()  # freed memory goes back to the system while the server runs (app/memory.py)
    demo = build(engine)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, share=False, theme=theme(), footer_links=[],
                prevent_thread_lock=not block, quiet=not block, **launch_options(users, args.max_upload_mb))
    return demo


if __name__ == "__main__":
    raise SystemExit(main())
