# Installed by tcpkit's `make venv` into <venv>/etc/ipython/: IPython reads it for every kernel
# of that environment. It loads tcpkit's %tcpkit magics only in kernels that a Jupyter server
# started for a notebook (the server sets JPY_SESSION_NAME to the notebook's path), so the
# kernels that papermill starts for gate runs are left exactly as they were.
import os

if os.environ.get("JPY_SESSION_NAME"):
    c = get_config()  # type: ignore[name-defined]  # noqa: F821 - traitlets provides it
    c.InteractiveShellApp.extensions.append("tcpkit")
