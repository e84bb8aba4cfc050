"""The presets' old home: they live with the tasks they name, in :mod:`gatedrnn.tasks.presets`."""

from gatedrnn.tasks.presets import ABOUT, BUILT_IN, DATA_ENV, PRESETS, data_dir, resolve  # noqa: F401
