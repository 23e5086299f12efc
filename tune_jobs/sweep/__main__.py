"""`python -m tune_jobs.sweep SPEC ...` (what `ray job submit -- ...` calls): the same as `lora-sweep run SPEC ...`."""

import sys

from tune_jobs.run import main

sys.exit(main())
