"""BEATs audio encoder (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers",
arXiv 2212.09058).

Written from the paper and checked against the official implementation (microsoft/unilm ``beats/``) for
parameter names and arithmetic, so an official ``BEATs_iter3*.pt`` file (a dict ``{"cfg": {...}, "model":
state_dict}``) loads with strict key matching and gives the same features. SALMONN uses this encoder next to
Whisper.

Shape legend: ``b`` batch, ``s`` samples, ``f`` fbank frames (100 Hz), ``m`` mel bins (128), ``e`` patch
width (``embed_dim``), ``t`` tokens, ``d`` width (``encoder_embed_dim``), ``h`` heads, ``l`` layers.

Pipeline (paper Sec. 3.1, Fig. 2)::

    waveform * 2**15 -> Kaldi fbank (b, f, 128) -> (x - 15.41663) / (2 * 6.55582)
      -> 16x16 patches, Conv2d(1, e)          (b, e, f // 16, 8)
      -> flatten time-major                   (b, t = (f // 16) * 8, e); token j = 8 * time_row + freq_band
      -> LayerNorm, Linear(e, d)
      -> + GELU(weight-normed grouped Conv1d)  (conv positional embedding, as wav2vec 2.0)
      -> LayerNorm -> 12 post-LN ("DeepNorm") layers with gated relative position bias (as WavLM)

Output length and frame rate. A clip of ``L`` samples gives ``F = 1 + (L - 400) // 160`` fbank frames
(25 ms window, 10 ms shift, edges snipped) and ``T = (F // 16) * 8`` tokens: the patch Conv2d has stride 16
and no padding, so the official model drops the trailing ``F % 16`` frames; we do the same. Each 160 ms of
audio yields one row of 8 frequency patches, laid out one after another, so the sequence runs at a
*nominal* 8 tokens / 0.16 s = 50 tokens/s. Consecutive tokens are different frequency bands of the same
160 ms, not successive 20 ms steps; SALMONN nevertheless treats the BEATs sequence as frame-synchronous with
Whisper's 50 Hz output (it pads/truncates one to the other's length and concatenates), and so does
``frame_rate = 50.0`` here. The shortest clip with one full patch row is ``400 + 15 * 160 = 2800`` samples
(175 ms): that is ``min_samples``.

Padding. The official ``padding_mask`` path maps a sample-level mask to tokens by reshaping, which marks a
partly filled last patch row as partly valid and depends on the batch's longest clip. Here the valid token
count is computed exactly from each clip's length with the formula above, padded tokens are zeroed before
the positional convolution and never attended to, so a clip's features do not depend on what it is batched
with, and equal the official output for that clip run alone.

Checkpoint notes (verified against the official code):

* the positional conv uses ``torch.nn.utils.weight_norm(..., dim=2)``: keys ``encoder.pos_conv.0.weight_g``
  ``(1, 1, conv_pos)`` and ``weight_v``; we hold the two tensors directly and rebuild the weight each call;
* layer 0 owns the relative-position table and the other layers share that very module, so ``state_dict()``
  lists ``encoder.layers.{i}.self_attn.relative_attention_bias.weight`` for *every* layer (all equal). We
  share it the same way. Exports that keep only layer 0's copy load too;
* fine-tuned AudioSet checkpoints (``finetuned_model: true``) carry ``predictor.weight``/``predictor.bias``
  (the 527-class head). They are loaded and saved so the file round-trips, but ``forward`` never uses them:
  SALMONN and mowe take the encoder features;
* ``layer_wise_gradient_decay_ratio``, ``encoder_layerdrop`` and ``predictor_dropout`` are training-time
  settings of the official recipe; they are kept in the config (so files round-trip) and not applied.
"""

from mowe.encoders.beats.config import BEATS_PRESETS, BEATsConfig
from mowe.encoders.beats.fbank import KaldiFbank, kaldi_mel_matrix
from mowe.encoders.beats.model import BEATsEncoder

__all__ = ["BEATS_PRESETS", "BEATsConfig", "BEATsEncoder", "KaldiFbank", "kaldi_mel_matrix"]
