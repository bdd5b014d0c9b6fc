"""python -m proxylm.tasks.sandbox: print which isolation layers hold on this machine (JSON)."""

import json

from .probe import detect_isolation

print(json.dumps(detect_isolation(), indent=2))
