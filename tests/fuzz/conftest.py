import pytest


@pytest.fixture
def fuzz_cases(request):
    """``--fuzz-cases N``, or a test's CI-sized default when it is not given."""
    given = request.config.getoption("--fuzz-cases")

    def cases(default):
        return default if given is None else given
    return cases


LENET_META = {"model": "lenet", "kind": "image", "num_classes": 10, "in_channels": 1,
              "input_size": 28, "dataset": "fashion-mnist",
              "classes": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                          "Sneaker", "Bag", "Ankle boot"]}


@pytest.fixture(scope="session")
def lenet_checkpoint(tmp_path_factory):
    """A real checkpoint of a tiny model (LeNet with its SGD state), as ``divenet train`` writes
    one: the path of its JSON file."""
    import divenet as dn
    from divenet.io import save_checkpoint
    from divenet.models import get_model

    dn.manual_seed(0)
    model = get_model("lenet")
    model.init(dn.zeros(1, 1, 28, 28))
    opt = dn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), 1, model, opt, dict(LENET_META))


@pytest.fixture(scope="session")
def good_png(tmp_path_factory):
    from PIL import Image

    import numpy as np

    path = tmp_path_factory.mktemp("img") / "shirt.png"
    pixels = (np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path
