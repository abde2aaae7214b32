"""What the SDK check scripts share: the proxy's address and key, and the loop that runs their checks.

The scripts (test_*.py here) are run as plain programs by proxy/tests/python_sdk.rs, python_limits.rs and
anthropic_sdk.rs, which pass the environment variables each script's docstring lists and read only the exit
status. Python puts a script's own directory on sys.path, so `import sdk_checks` finds this file.
"""

import os
import sys
import traceback

BASE = os.environ["TOLLGATE_BASE_URL"]
KEY = os.environ["TOLLGATE_KEY"]


def run(sdk, checks):
    """Runs every check, printing one line each (with the traceback of a failure) and a final
    "N passed, N failed"; exits non-zero if any failed."""
    print(f"{sdk.__name__} {sdk.__version__} against {BASE}")
    passed = failed = 0
    for check in checks:
        try:
            check()
            passed += 1
            print(f"ok   {check.__name__}")
        except Exception:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc(file=sys.stdout)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
