"""Stand-in for PIL.Image: `open` reads a PNG's size from its header; the image remembers its file."""

import fake_upstream


class OpenedImage:
    def __init__(self, filename, size):
        self.filename = filename
        self.size = size

    def convert(self, mode):
        assert mode == "RGB"
        return OpenedImage(self.filename, self.size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def open(path):
    return OpenedImage(str(path), fake_upstream.png_header_size(path))
