"""Plots and bertviz views that survive a static build (introduced in Chapter 2).

bertviz's views are HTML + JavaScript. With ``html_action="return"`` they come back as an
``IPython.display.HTML`` object; displaying that object stores it in the notebook as a
``text/html`` output, which Jupyter shows live and the built site renders (the site's build
points bertviz's require.js / d3 / jQuery URLs at local copies, see
:mod:`course_book.sphinx_offline`).
"""
from __future__ import annotations

import re
import tempfile
from typing import TYPE_CHECKING, Any, Sequence

import torch

if TYPE_CHECKING:
    from IPython.display import HTML
    from matplotlib.axes import Axes

# bertviz writes its menus as "Layer: <select id="layer">" (or with the label in a span): the
# text is not tied to the menu, so a screen reader announces an unnamed menu (axe: select-name).
_UNNAMED_SELECT = re.compile(r'(?P<label>[A-Z][A-Za-z ]{0,30}):\s*(?:</span>\s*)?<select id="(?P<id>\w+)">')


def label_selects(html: str) -> str:
    """Give each of bertviz's menus the name its visible label shows (``aria-label``)."""
    def name(m: re.Match[str]) -> str:
        return m.group(0).removesuffix(">") + f' aria-label="{m.group("label").strip()}">'
    return _UNNAMED_SELECT.sub(name, html)


def _accessible(view: Any) -> Any:
    """The same bertviz view, its menus named (see :func:`label_selects`)."""
    if hasattr(view, "data") and isinstance(view.data, str):
        view.data = label_selects(view.data)
    return view


def _as_list(attentions: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    # bertviz draws a weight as a line's opacity: 3 decimals are more than the eye sees, and in
    # float64 they print short, so the stored HTML is small (a 6x12-head view of 24 tokens:
    # 1.08 MB, against 1.29 MB with 4 decimals)
    out = [a.detach().cpu().double().round(decimals=3) for a in attentions]
    if not out or out[0].dim() != 4 or out[0].shape[0] != 1:
        raise ValueError("attentions must be one (1, nh, T, T) tensor per layer (a batch of one sentence); "
                         "run the model on one sentence with output_attentions=True")
    return out


def head_view(attentions: Sequence[torch.Tensor], tokens: list[str], sentence_b_start: int | None = None,
              **kwargs: Any) -> HTML:
    """bertviz's head view (every head of one layer, lines from each token) as HTML."""
    from bertviz import head_view as _head_view

    return _accessible(_head_view(_as_list(attentions), tokens, sentence_b_start, html_action="return", **kwargs))


def model_view(attentions: Sequence[torch.Tensor], tokens: list[str], sentence_b_start: int | None = None,
               **kwargs: Any) -> HTML:
    """bertviz's model view (a thumbnail per layer and head) as HTML."""
    from bertviz import model_view as _model_view

    return _accessible(_model_view(_as_list(attentions), tokens, sentence_b_start, html_action="return", **kwargs))


def neuron_view(bert: torch.nn.Module, tokenizer: Any, sentence_a: str, sentence_b: str | None = None,
                layer: int | None = None, head: int | None = None) -> HTML:
    """bertviz's neuron view (queries, keys, q·k, softmax) of a Hugging Face ``BertModel``, as HTML.

    The neuron view needs bertviz's own instrumented BERT; this builds one from ``bert``'s
    config and copies ``bert``'s weights into it (the parameter names are the same), so it
    works with local weights and without the hub. ``tokenizer`` is the model's tokenizer
    (its vocabulary is handed to bertviz's WordPiece tokenizer).
    """
    from bertviz import neuron_view as _neuron_view
    from bertviz.transformers_neuron_view import BertModel, BertTokenizer
    from bertviz.transformers_neuron_view.modeling_bert import BertConfig

    cfg: Any = bert.config  # a transformers config: its fields are attributes set at run time
    vconfig = BertConfig(vocab_size_or_config_json_file=cfg.vocab_size, hidden_size=cfg.hidden_size,
                         num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                         intermediate_size=cfg.intermediate_size, hidden_act=cfg.hidden_act,
                         max_position_embeddings=cfg.max_position_embeddings,
                         type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps)
    vconfig.output_attentions = True
    model = BertModel(vconfig)
    result = model.load_state_dict({k.removeprefix("bert."): v for k, v in bert.state_dict().items()}, strict=False)
    if result.missing_keys:
        raise ValueError(f"these weights are not a BERT encoder's: missing {result.missing_keys[:3]} ...")
    model.eval()
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])  # WordPiece: one token a line, by id
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise ValueError("the tokenizer's vocabulary ids are not 0 .. V-1: is it a WordPiece (BERT) tokenizer?")
    with tempfile.TemporaryDirectory() as folder:
        with open(f"{folder}/vocab.txt", "w", encoding="utf-8") as f:
            f.write("".join(token + "\n" for token, _ in vocab))
        vtok = BertTokenizer(f"{folder}/vocab.txt", do_lower_case=getattr(tokenizer, "do_lower_case", True))
    return _accessible(_neuron_view.show(model, "bert", vtok, sentence_a, sentence_b, layer=layer, head=head,
                                         html_action="return"))


def show(html: Any) -> None:
    """Display a bertviz view (or any HTML) so that it is stored in the notebook's outputs."""
    from IPython.display import HTML, display

    display(html if hasattr(html, "_repr_html_") else HTML(str(html)))


def plot_attention(weights: torch.Tensor, tokens_q: Sequence[str], tokens_k: Sequence[str] | None = None,
                   ax: Axes | None = None, title: str = "", cmap: str = "Blues") -> Axes:
    """A (T, S) attention matrix as a heatmap: rows are queries, columns keys."""
    import matplotlib.pyplot as plt

    w = weights.detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"plot one (T, S) matrix at a time, got shape {tuple(w.shape)}")
    tokens_k = tokens_q if tokens_k is None else tokens_k
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * len(tokens_k) + 1.5, 0.45 * len(tokens_q) + 1))
    im = ax.imshow(w.numpy(), cmap=cmap, vmin=0, vmax=max(1e-9, float(w.max())))
    ax.set_xticks(range(len(tokens_k)), tokens_k, rotation=90)
    ax.set_yticks(range(len(tokens_q)), tokens_q)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


__all__ = ["head_view", "label_selects", "model_view", "neuron_view", "plot_attention", "show"]
