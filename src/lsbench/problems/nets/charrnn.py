"""The character-level RNN of the Tolstoi "War and Peace" problem (DeepOBS ``tolstoi_char_rnn``)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CharRNN"]


class CharRNN(nn.Module):
    """Embedding -> 2 LSTM layers of 128 units -> linear layer over the vocabulary, for next-character prediction.

    Input: ``(N, T)`` int64 character indices; output: ``(N, T, V)`` logits, position ``t`` predicting character
    ``t + 1`` (the targets are the inputs shifted by one). Take the loss per character, averaged over all ``N · T``
    positions -- :class:`lsbench.problems.evaluation.SequenceCrossEntropy`, the problem's loss;
    ``nn.CrossEntropyLoss`` applied to ``(N, T, V)`` directly would read ``T`` as the class dimension.

    As DeepOBS' TensorFlow problem: an embedding of size 128 (= hidden size) and every LSTM layer wrapped in dropout
    on its input and on its output (keep probability 0.8, i.e. ``dropout=0.2``), so two independent masks sit
    between the layers. Differences:

    * each layer is its own single-layer ``nn.LSTM`` with explicit ``nn.Dropout`` modules instead of one
      ``nn.LSTM(num_layers=2, dropout=...)``: the inter-layer dropout of cuDNN's fused RNN draws from cuDNN's own
      generator state rather than the seeded torch RNG, so its masks would not repeat across the evaluations of one
      line-search step; ``nn.Dropout`` draws from the torch RNG, which a
      :class:`~lsbench.optim.closure.BatchClosure` seeds per call;
    * the state starts at zero for every batch; DeepOBS carries the LSTM state over between consecutive batches of
      a pass through the text (a line search would then also have to fix the incoming state per step);
    * PyTorch's LSTM has two bias vectors per layer where TensorFlow's has one (1,024 more parameters for two
      layers: 285,523 instead of 284,499 with the 83-character vocabulary);
    * PyTorch's default initialisation (uniform ±1/√128 for LSTM and linear, N(0, 1) for the embedding) instead of
      TensorFlow's Glorot-uniform.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 128, num_layers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.lstms = nn.ModuleList(nn.LSTM(hidden_size, hidden_size, batch_first=True) for _ in range(num_layers))
        self.input_dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(num_layers))
        self.output_dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(num_layers))
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        out = self.embedding(x)
        for lstm, drop_in, drop_out in zip(self.lstms, self.input_dropouts, self.output_dropouts, strict=True):
            out, _ = lstm(drop_in(out))
            out = drop_out(out)
        return self.decoder(out)
