"""popvae: population training of Gumbel-Softmax VAEs and robust autoencoders on Ray.

The Python API (`popvae.api`) is exported here lazily: `import popvae` imports neither torch nor Ray.

    popvae.RunConfig, popvae.train, popvae.resume, popvae.load_best, popvae.evaluate, popvae.ConfigError
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError", "DatasetError", "RunConfig", "evaluate", "load_best", "resume", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from popvae import api

        return getattr(api, name)
    raise AttributeError(f"module 'popvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
