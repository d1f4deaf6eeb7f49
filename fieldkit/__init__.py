"""Field tooling run on a technician's or a build machine's CPython: today the firmware image
builder (fieldkit.image); issue #11 grows this into the field tool."""
