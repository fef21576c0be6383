"""Converts one real family's weights for the test session to reuse:
`python tests/convert_real_weights.py {smollm2,gemma3} OUT_DIR`, then INTERP_TEST_<FAMILY>=OUT_DIR.

.ci/run converts both this way before the fast tier (its stage "real weights"), so that the
fast, real-weight and slow tiers share one conversion each instead of converting per session.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import REAL_FAMILIES, convert_real  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in REAL_FAMILIES:
        sys.exit(f"usage: python tests/convert_real_weights.py {{{','.join(REAL_FAMILIES)}}} OUT_DIR")
    convert_real(sys.argv[1], Path(sys.argv[2]))
