"""The GPU check's progress line, shared by its stages."""

import time


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)
