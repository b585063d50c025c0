"""Every exit code of the scripts and tools, in one place (docs/devices.md#interrupting-and-resuming lists
them for users). Each is one line on stderr first, never a traceback."""

DONE = 0  # finished (also --help)
BAD_INPUT = 2  # a bad setting, flag or file, or a folder in use by another run: nothing done
DIVERGED = 3  # a NaN or infinite loss or weight: nothing of that epoch saved, the last good checkpoint kept
WRITE_FAILED = 4  # a file could not be written (disk full, quota, read-only): the last complete checkpoint kept
OUT_OF_MEMORY = (
    5  # the device (or the host) ran out of memory: one line naming what to lower; the last complete checkpoint kept
)
LOST_PEER = 6  # under torchrun: another process died or stopped answering (torchrun --max-restarts restarts it)
SIGNALLED = 128  # stopped by a signal after writing a checkpoint: 128 + the signal (130 Ctrl-C, 143 SIGTERM)
