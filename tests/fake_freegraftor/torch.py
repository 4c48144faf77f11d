"""Stand-in for torch in the fake FreeGraftor environment: masks and boxes as shapes and values only."""

bool = "torch.bool"  # as torch names its dtypes
float32 = "torch.float32"


class Tensor:
    def __init__(self, shape, values=None, fill=None, dtype=None):
        self.shape = tuple(shape)
        self.values = values
        self.fill = fill
        self.dtype = dtype

    def __len__(self):
        return self.shape[0]

    def __iter__(self):
        return iter(self.values if self.values is not None else [self.fill] * self.shape[0])


def ones(shape, dtype=None):
    return Tensor(shape, fill=1, dtype=dtype)


def tensor(values, dtype=None):
    values = list(values)
    return Tensor((len(values),), values=values, dtype=dtype)
