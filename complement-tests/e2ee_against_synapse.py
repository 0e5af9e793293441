"""Runs the E2EE client scenarios of test_e2ee_clients.py against real
Synapses instead of our server: the check that the scenarios themselves are
right. Not a test (pytest does not collect it).

    complement-tests/.venv/bin/python complement-tests/e2ee_against_synapse.py [substring ...]

Starts two federating Synapses (MSC3814 dehydrated devices switched on),
runs each nio scenario on one Synapse and across the two, and each js part
(the dehydration part also with the sender on the other Synapse). Only the
runs whose name contains one of the substrings, if any are given. Exits
non-zero if any failed. Logs: artifacts/synapse-e2ee-{a,b}.log.
"""

import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2ee_nio  # noqa: E402
from federation import Synapse  # noqa: E402

NODE = HERE / "node_modules" / ".bin" / "node"


class E2EESynapse(Synapse):
    def _write_config(self):
        super()._write_config()
        path = self.dir / "homeserver.yaml"
        config = yaml.safe_load(path.read_text())
        config["experimental_features"] = {"msc3814_enabled": True}
        path.write_text(yaml.safe_dump(config))


def main(filters: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="e2ee-synapse-") as tmp:
        tmp = Path(tmp)
        a = E2EESynapse(tmp / "a", "e2ee-a")
        b = E2EESynapse(tmp / "b", "e2ee-b")
        runs = []
        for name in e2ee_nio.SCENARIOS:
            runs.append((f"nio {name}", "nio", name, a.url, a.url))
            runs.append((f"nio {name} federated", "nio", name, a.url, b.url))
        runs.append(("js backup", "js", "backup", a.url, a.url))
        runs.append(("js dehydration", "js", "dehydration", a.url, a.url))
        runs.append(("js dehydration federated", "js", "dehydration", a.url, b.url))
        runs = [r for r in runs if not filters or any(f in r[0] for f in filters)]
        federated = any(r[3] != r[4] for r in runs)
        failed = []
        try:
            a.start()
            if federated:
                b.start()
            for label, kind, name, alice_url, bob_url in runs:
                started = time.monotonic()
                try:
                    if kind == "nio":
                        alice = e2ee_nio.register_user(alice_url, e2ee_nio.unique("alice"))
                        bob = e2ee_nio.register_user(bob_url, e2ee_nio.unique("bob"))
                        e2ee_nio.run(e2ee_nio.SCENARIOS[name], alice, bob, tmp / "stores" / label.replace(" ", "-"))
                    else:
                        args = [str(NODE), str(HERE / "js" / "e2ee.mjs"), alice_url, name, bob_url]
                        result = subprocess.run(args, capture_output=True, text=True, timeout=200)
                        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
                    print(f"PASS {label} ({time.monotonic() - started:.1f}s)", flush=True)
                except Exception:
                    failed.append(label)
                    print(f"FAIL {label} ({time.monotonic() - started:.1f}s)\n{traceback.format_exc()}", flush=True)
        finally:
            a.stop()
            b.stop()
        print(f"{len(runs) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
