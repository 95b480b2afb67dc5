"""A map-style dataset whose items take 10 ms each: a DataLoader's workers are still busy with it
when a test signals them or the process exits. Its own module so that a test's child process can
import it without the test module (and its conftest)."""
import time


class SlowItems:
    def __len__(self):
        return 400

    def __getitem__(self, i):
        time.sleep(0.01)
        return i
