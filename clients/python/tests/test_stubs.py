"""The checked-in stubs (tidal/_proto) are what gen.sh makes from proto/ now."""

import filecmp
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.join(HERE, "..")


def test_stubs_match_proto():
    checked_in = os.path.join(PKG, "tidal", "_proto")
    with tempfile.TemporaryDirectory(prefix="tidal-py-stubs-") as out:
        subprocess.run(["bash", os.path.join(PKG, "gen.sh"), out], check=True,
                       env={**os.environ, "PYTHON": sys.executable})
        made = sorted(f for f in os.listdir(out) if f.endswith(".py"))
        kept = sorted(f for f in os.listdir(checked_in) if f.endswith(".py"))
        assert made == kept, f"clients/python/tidal/_proto has {kept}, gen.sh makes {made}: run clients/python/gen.sh"
        _, differ, errs = filecmp.cmpfiles(out, checked_in, made, shallow=False)
        assert not differ and not errs, (
            f"clients/python/tidal/_proto/{', '.join(differ + errs)} differ from what proto/ generates: "
            "proto/ changed and the stubs were not regenerated; run clients/python/gen.sh and commit them"
        )
