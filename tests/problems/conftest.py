import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Run the problems' tests on one intra-op thread.

    Their models are tiny, so extra threads buy nothing, while on a shared CPU (other jobs, parallel test runs)
    competing OpenMP threads made the digits training test 10-50x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
