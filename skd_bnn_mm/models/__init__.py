from . import layers  # noqa: F401  (binary layers first: backbones build them)
from . import backbones, classifiers, losses, necks, utils  # noqa: F401,E402
from . import distill  # noqa: F401,E402
