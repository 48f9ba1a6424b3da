from . import hooks, runner, schedulers  # noqa: F401
from . import fast, optim  # noqa: F401,E402
