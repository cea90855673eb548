"""popvae: population training of Gumbel-Softmax VAEs and robust autoencoders on Ray.

The Python API (`popvae.api`) is exported here lazily: `import popvae` imports neither torch nor Ray.

    popvae.RunConfig, popvae.train, popvae.resume, popvae.load_best, popvae.prepare, popvae.evaluate, popvae.ConfigError
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Installed, the layers are subpackages in this folder. In a source checkout on sys.path (Ray's `--working-dir .`,
# `python -m` from the repository root) this folder holds only the package root; the layers (models/, attacks/,
# population/, cluster/) lie beside it, so they are found there, as the install's package-dir mapping places them.
_CHECKOUT = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "population").is_dir() and (_CHECKOUT / "population" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821  (a package's own __path__)

__all__ = ["ConfigError", "DatasetError", "RunConfig", "evaluate", "load_best", "prepare", "resume", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from popvae import api

        return getattr(api, name)
    raise AttributeError(f"module 'popvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
