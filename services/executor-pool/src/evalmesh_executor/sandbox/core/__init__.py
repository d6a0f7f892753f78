"""What both sandbox backends share: the value types, the backend surface and its common part,
one run's lifecycle, output capture, the escape canaries, the seccomp deny list, and what a job
sees of its sandbox. Nothing here knows bwrap or docker."""
