"""Flower reads ``./flowerconfig.py`` when no ``--conf`` is given: with this file, the plain
``celery -A tasks flower`` (run from the repository root, as the README and the images do)
takes tfgen's Flower settings, and refuses to start unauthenticated with ``APP_ENV=prod``.
The settings themselves live in ``config/flowerconfig.py``.
"""

import os

from config.flowerconfig import flower_options

globals().update(flower_options(os.environ))
