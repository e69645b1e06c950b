"""The pitfalls: one manifest that the variants, the harness, the README and the slides all read.

Each pitfall is a few exact text substitutions in transformer.py (`Edit(old, new)`). The broken
variant is built from the current transformer.py every time, so it stays in step with the code;
if an `old` snippet stops occurring exactly once, building the variant fails and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    """Replace the text `old`, which must occur exactly once in transformer.py, with `new`."""

    old: str
    new: str


@dataclass(frozen=True, kw_only=True)
class Pitfall:
    """A deliberately broken transformer.py with exactly one bug.

    name       slug used on the command line: make pitfall NAME=<name>
    title      a few words for a table or a slide
    loud       True if the bug raises an exception; False if it runs and is silently wrong
    bug        the bug, in one sentence
    symptom    what a user would see, in one line
    paper      the section of the paper the bug violates
    fix        the fix, in one sentence
    caught_by  a hint for display only (the harness finds the catching test by running the tests)
    edits      the substitutions that turn transformer.py into the broken variant
    """

    name: str
    title: str
    loud: bool
    bug: str
    symptom: str
    paper: str
    fix: str
    caught_by: str = ""
    edits: tuple[Edit, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"a pitfall name must be a lower-case slug like missing_scaling, got {self.name!r}")
        for field in ("title", "bug", "symptom", "paper", "fix"):
            text = getattr(self, field)
            if not text or "\n" in text:
                raise ValueError(f"pitfall {self.name}: {field} must be one non-empty line, got {text!r}")
        if not self.edits or not all(isinstance(edit, Edit) for edit in self.edits):
            raise ValueError(f"pitfall {self.name}: edits must be a non-empty tuple of Edit, got {self.edits!r}")

    @property
    def kind(self) -> str:
        return "loud" if self.loud else "silent"

    @property
    def doc(self) -> str:
        """The pitfall as a docstring: bug, loud or silent, symptom, paper section, fix."""
        how = "Loud: it raises an exception." if self.loud else "Silent: it runs, with the right shapes."
        return f"{self.title}. {self.bug}\n\n{how}\nSymptom: {self.symptom}\nViolates: {self.paper}\nFix: {self.fix}"


PITFALLS: tuple[Pitfall, ...] = (
    # --- masks -----------------------------------------------------------------------------------
    Pitfall(
        name="causal_mask_off_by_one",
        title="Causal mask off by one",
        loud=False,
        bug="The subsequent-position mask keeps one diagonal too many, so decoder position i also sees position i + 1.",
        symptom="Training loss drops fast (the model reads the next token), then greedy decoding produces garbage.",
        paper="§3.2.3: position i may attend to positions up to and including i only",
        fix="Keep the main diagonal and everything below it: .tril(), not .tril(1).",
        caught_by="test_decoder_cannot_see_the_future",
        edits=(
            Edit(
                "torch.ones(size, size, dtype=torch.bool, device=device).tril()",
                "torch.ones(size, size, dtype=torch.bool, device=device).tril(1)",
            ),
        ),
    ),
    Pitfall(
        name="padding_mask_on_queries",
        title="Padding mask on the query axis",
        loud=True,
        bug="The padding mask is shaped (B, 1, L, 1) instead of (B, 1, 1, L), so it hides padding queries, not padding keys.",
        symptom="Cross-attention raises 'attention mask of shape (B, 1, S, 1) cannot broadcast' when S != T; "
        "where the lengths agree, attention silently reads the padding.",
        paper="§3.2.1, Eq. (1): the softmax runs over the keys, so the mask must remove keys",
        fix="Put the token axis last, where the keys are: (tokens != pad_id)[:, None, None, :].",
        caught_by="test_encoder_ignores_padding",
        edits=(Edit("return (tokens != pad_id)[:, None, None, :]", "return (tokens != pad_id)[:, None, :, None]"),),
    ),
    Pitfall(
        name="inverted_mask",
        title="Mask polarity inverted",
        loud=False,
        bug="Attention reads a True in the mask as 'ignore' (nn.MultiheadAttention's convention) "
        "while every mask is built with True = 'may attend' (F.scaled_dot_product_attention's).",
        symptom="Every query attends only to the positions it must not see: the future and the padding.",
        paper="§3.2.3: illegal connections are set to -inf, legal ones kept",
        fix="Use one convention everywhere; here True = may attend, so fill where the mask is False (~mask).",
        caught_by="test_attention_matches_pytorch",
        edits=(
            Edit("scores = scores.masked_fill(~mask, ", "scores = scores.masked_fill(mask, "),
            Edit("weights = weights.masked_fill(~mask, 0.0)", "weights = weights.masked_fill(mask, 0.0)"),
        ),
    ),
    # --- shapes ----------------------------------------------------------------------------------
    Pitfall(
        name="split_heads_without_transpose",
        title="Heads split without a transpose",
        loud=False,
        bug="split_heads views (B, L, D) directly as (B, H, L, d_k), so each 'head' holds slices of several positions.",
        symptom="Right shapes, no error; the model learns slowly and the decoder can see the future.",
        paper="§3.2.2: each head projects every position to its own d_k dimensions",
        fix="View as (B, L, H, d_k) first, then transpose(1, 2) to (B, H, L, d_k).",
        caught_by="test_each_query_position_is_independent",
        edits=(
            Edit(
                "x = x.view(B, L, self.n_heads, self.d_k)  # (B, L, D) -> (B, L, H, d_k)\n"
                "        return x.transpose(1, 2)  # (B, L, H, d_k) -> (B, H, L, d_k): heads become a batch dim",
                "return x.view(B, self.n_heads, L, self.d_k)  # (B, L, D) -> (B, H, L, d_k)",
            ),
        ),
    ),
    Pitfall(
        name="merge_heads_without_transpose",
        title="Heads merged without a transpose",
        loud=False,
        bug="merge_heads reshapes (B, H, L, d_k) straight to (B, L, D), so each output position gets pieces "
        "of other positions.",
        symptom="Right shapes, no error; outputs mix positions, and the decoder can see the future.",
        paper="§3.2.2: Concat(head_1, ..., head_h) joins the heads of one position",
        fix="transpose(1, 2) back to (B, L, H, d_k) before the reshape to (B, L, D).",
        caught_by="test_each_query_position_is_independent",
        edits=(Edit("        x = x.transpose(1, 2)  # (B, H, L, d_k) -> (B, L, H, d_k)\n", ""),),
    ),
    Pitfall(
        name="view_after_transpose",
        title=".view after .transpose",
        loud=True,
        bug="merge_heads calls .view on the transposed tensor, whose memory is no longer contiguous.",
        symptom="RuntimeError: view size is not compatible with input tensor's size and stride "
        "(at least one dimension spans across two contiguous subspaces).",
        paper="§3.2.2: Concat(head_1, ..., head_h)",
        fix="Use .reshape (it copies when it must), or .contiguous().view(...).",
        caught_by="test_multi_head_attention_matches_pytorch",
        edits=(
            Edit(
                "return x.reshape(B, L, self.n_heads * self.d_k)",
                "return x.view(B, L, self.n_heads * self.d_k)",
            ),
        ),
    ),
    # --- attention -------------------------------------------------------------------------------
    Pitfall(
        name="missing_scaling",
        title="Missing 1/sqrt(d_k)",
        loud=False,
        bug="The attention scores are not divided by sqrt(d_k).",
        symptom="It trains, only worse: the softmax saturates, attention turns nearly one-hot "
        "and the gradients vanish as d_k grows.",
        paper="§3.2.1, Eq. (1) and footnote 4",
        fix="Divide Q K^T by sqrt(d_k) before the softmax.",
        caught_by="test_attention_matches_pytorch",
        edits=(Edit("query @ key.transpose(-2, -1) / math.sqrt(d_k)", "query @ key.transpose(-2, -1)"),),
    ),
    Pitfall(
        name="softmax_over_queries",
        title="Softmax over the wrong axis",
        loud=False,
        bug="The softmax normalises over the queries (dim=-2) instead of over the keys (dim=-1).",
        symptom="Attention weights no longer sum to 1 per query, and through the causal mask the decoder "
        "sees the future.",
        paper="§3.2.1, Eq. (1): a softmax over the keys for each query",
        fix="softmax(dim=-1): each query's weights over the keys sum to 1.",
        caught_by="test_attention_weights_are_distributions",
        edits=(Edit("scores.softmax(dim=-1)", "scores.softmax(dim=-2)"),),
    ),
    Pitfall(
        name="nan_from_inf_fill",
        title="-inf fill turns a fully masked row into NaN",
        loud=False,
        bug="Masked scores are filled with -inf and nothing guards a query whose keys are all masked: "
        "its softmax is 0/0.",
        symptom="The loss turns nan as soon as a batch holds an empty (all-padding) sentence, "
        "and every weight becomes nan.",
        paper="§3.2.3: masking by setting illegal connections to -inf",
        fix="Fill with the most negative finite number and zero the weights of masked keys after the softmax.",
        caught_by="test_fully_masked_query_attends_to_nothing",
        edits=(
            Edit("torch.finfo(scores.dtype).min", 'float("-inf")'),
            Edit(
                "    if mask is not None:\n"
                "        weights = weights.masked_fill(~mask, 0.0)  # a fully masked row attends to nothing\n",
                "",
            ),
        ),
    ),
    Pitfall(
        name="fp16_fill_overflow",
        title="-1e9 fill overflows float16",
        loud=True,
        bug="Masked scores are filled with the constant -1e9, which does not exist in float16 (it ends at -65504).",
        symptom="Fine in float32; in float16 (mixed precision): RuntimeError: value cannot be converted to type "
        "c10::Half without overflow.",
        paper="§3.2.3: masking by setting illegal connections to -inf",
        fix="Fill with torch.finfo(scores.dtype).min, which exists in every float dtype.",
        caught_by="test_attention_works_in_float16",
        edits=(Edit("torch.finfo(scores.dtype).min", "-1e9"),),
    ),
    # --- embeddings ------------------------------------------------------------------------------
    Pitfall(
        name="unscaled_embeddings",
        title="Embeddings not scaled by sqrt(d_model)",
        loud=False,
        bug="Token embeddings are not multiplied by sqrt(d_model) before the positional encoding is added.",
        symptom="It trains, slowly: the positional encoding (scale 1) drowns the token vectors (scale 1/sqrt(d_model)).",
        paper="§3.4: in the embedding layers, we multiply those weights by sqrt(d_model)",
        fix="Return self.embedding(tokens) * sqrt(d_model).",
        caught_by="test_embeddings_are_scaled_by_sqrt_d_model",
        edits=(Edit("self.embedding(tokens) * self.scale", "self.embedding(tokens)"),),
    ),
    Pitfall(
        name="positional_encoding_i_not_2i",
        title="Positional encoding uses i, not 2i",
        loud=False,
        bug="The exponent of the positional encoding counts i = 0, 1, 2, ... where the formula has 2i = 0, 2, 4, ...",
        symptom="Nothing visible: the longest wavelength is 2π·100 instead of 2π·10000, "
        "so far-apart positions look alike.",
        paper="§3.5: PE(pos, 2i) = sin(pos / 10000^(2i / d_model))",
        fix="Take the exponent from the even dimension indices: torch.arange(0, d_model, 2).",
        caught_by="test_positional_encoding_follows_the_paper",
        edits=(
            Edit(
                "torch.arange(0, d_model, 2, dtype=torch.float64)",
                "torch.arange(d_model // 2, dtype=torch.float64)",
            ),
        ),
    ),
    Pitfall(
        name="weight_tying_by_copy",
        title="Weight tying by copy",
        loud=False,
        bug="The output projection gets a copy of the embedding matrix instead of the same Parameter.",
        symptom="It trains, with V x d_model extra parameters; the two matrices drift apart from the first step.",
        paper="§3.4: the same weight matrix for the embeddings and the pre-softmax linear transformation",
        fix="Assign the Parameter itself: self.generator.weight = self.tgt_embed.weight.",
        caught_by="test_output_projection_shares_the_embedding",
        edits=(
            Edit(
                "self.generator.weight = self.tgt_embed.weight",
                "self.generator.weight = nn.Parameter(self.tgt_embed.weight.detach().clone())",
            ),
        ),
    ),
    # --- training --------------------------------------------------------------------------------
    Pitfall(
        name="decoder_input_not_shifted",
        title="Decoder input not shifted right",
        loud=False,
        bug="Teacher forcing feeds the decoder the very tokens it must predict, not the target shifted right.",
        symptom="Training loss falls to almost zero, yet greedy decoding gets every sequence wrong.",
        paper="§3.1: the output embeddings are offset by one position",
        fix="Feed tgt[:, :-1] (BOS ... last) and predict tgt[:, 1:] (first ... EOS).",
        caught_by="test_learns_to_copy",
        edits=(Edit("decoder_input, labels = tgt[:, :-1], tgt[:, 1:]", "decoder_input, labels = tgt, tgt"),),
    ),
    Pitfall(
        name="loss_counts_padding",
        title="Loss averaged over padding",
        loud=False,
        bug="The label-smoothed loss is averaged over every position, padding included.",
        symptom="The loss depends on how much padding a batch holds, and the model is trained to predict padding.",
        paper="§5.4: label smoothing of the target tokens (padding is not a target)",
        fix="Sum the loss over non-padding positions and divide by their number.",
        caught_by="test_loss_ignores_padding",
        edits=(Edit("return loss[keep].sum() / keep.sum().clamp(min=1)", "return loss.mean()"),),
    ),
    Pitfall(
        name="dropout_at_eval",
        title="Dropout still active at eval",
        loud=False,
        bug="The residual dropout uses F.dropout, which defaults to training=True, so model.eval() does not turn it off.",
        symptom="The same input decoded twice gives two different outputs; evaluation scores are noisy and low.",
        paper="§5.4: residual dropout is a regulariser applied during training",
        fix="Use the nn.Dropout module (it follows model.eval()) or pass training=self.training.",
        caught_by="test_eval_mode_is_deterministic",
        edits=(
            Edit("self.norm(x + self.dropout(sublayer_out))", "self.norm(x + F.dropout(sublayer_out, self.dropout.p))"),
        ),
    ),
)
