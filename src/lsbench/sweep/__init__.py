"""The sweep toolkit: YAML grids (:mod:`.grid`), their expansion into runs (:mod:`.plan`) and GPU-hour estimates
(:mod:`.costs`), workers, backends and status."""
