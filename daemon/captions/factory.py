"""Which captioner a config asks for: kept apart from the captioner interface, which the
BLIP runtimes import, so that choosing one imports them without a circle."""

from __future__ import annotations

from daemon.captions.blip import BlipCaptioner
from daemon.captions.captioner import Captioner, NoCaptioner
from models.config import Config


def make_captioner(config: Config) -> Captioner:
    """The captioner `caption.model` names; cheap: nothing is loaded until `load()`."""
    if not config.caption.enabled:
        return NoCaptioner()
    return BlipCaptioner(config.caption, config.base_dir, cache_dir=config.data_dir)
