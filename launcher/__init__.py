"""The launcher: grid files → cells → SLURM (or local) jobs → status, resume, aggregate."""
