"""Figures drawn from the models themselves (not from scores): the per-token attention maps of MONKEY's
pass 1 (the paper's Figure 1 and appendix Figures 3-6).

    words.py             a prompt's tokens grouped by word, with the tokenizer's own word ids
    attention.py         pass 1 run to its end, recording image- and text-token maps
    grid.py              the panels (rows: layer x step, columns: words, image tokens) and their drawing
    attention_figure.py  config -> item, model, maps, figure; PNG + PDF + JSON
    cli.py               the `monkey-attention` command
"""
