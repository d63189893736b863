"""course_book.sphinx_a11y and viz.label_selects: the fixes for what axe reports (no browser)."""
from __future__ import annotations

from course_book.sphinx_a11y import fix_theme_markup, focusable_output_tables
from course_utils.viz import label_selects

SEARCH = ('<button class="btn search-button-field search-button__button pst-js-only" title="Search" '
          'aria-label="Search" data-bs-placement="bottom" data-bs-toggle="tooltip">\n '
          '<span>Search</span> Ctrl+K</button>')
ICON_SEARCH = ('<button class="btn btn-sm pst-navbar-icon search-button search-button__button pst-js-only" '
               'title="Search" aria-label="Search"><i class="fa-solid fa-magnifying-glass fa-lg"></i></button>')
THEME = ('<button class="theme-switch-button" aria-label="Color mode">\n'
         '  <i class="theme-switch fa-solid fa-sun                fa-lg" data-mode="light" title="Light"></i>\n'
         '  <i class="theme-switch fa-solid fa-moon               fa-lg" data-mode="dark"  title="Dark"></i></button>')


def test_the_theme_buttons_are_fixed_and_nothing_else() -> None:
    html, n = fix_theme_markup(SEARCH + ICON_SEARCH + THEME)
    assert n == 3
    assert 'search-button-field search-button__button pst-js-only" title="Search" data-bs-placement' in html
    assert ICON_SEARCH in html  # an icon-only button needs its aria-label
    assert 'title="Light"' not in html and 'title="Dark"' not in html and 'aria-label="Color mode"' in html
    assert fix_theme_markup(html) == (html, 0)  # idempotent


def test_the_sidebar_toggles_are_named() -> None:
    """A chapter with a nested page gets an icon-only <summary> (axe summary-name); it gets a name,
    once, and a <summary> with its own text is left alone."""
    toggle = ('<details open="open"><summary><span class="toctree-toggle" role="presentation">'
              '<i class="fa-solid fa-chevron-down"></i></span></summary><ul>')
    html, n = fix_theme_markup(toggle + "<details><summary>Show code</summary></details>")
    assert n == 1
    assert '<summary aria-label="Show or hide the pages under this chapter"><span class="toctree-toggle"' in html
    assert "<details><summary>Show code</summary>" in html
    assert fix_theme_markup(html) == (html, 0)


def test_the_folded_cell_toggle_is_named_by_its_text() -> None:
    """myst-nb's toggle of a hide-input cell (as myst-nb 1.4 writes it) is named by what it shows,
    not "Toggle hidden content" (axe label-content-name-mismatch); other <summary> are left alone."""
    folded = ('<div class="cell tag_hide-input docutils container">\n'
              '<details class="admonition hide above-input">\n<summary aria-label="Toggle hidden content">\n'
              '<p class="collapsed admonition-title">Show code cell source</p>\n'
              '<p class="expanded admonition-title">Hide code cell source</p>\n</summary>\n')
    other = '<details><summary aria-label="Toggle hidden content">x</summary></details>'
    html, n = fix_theme_markup(folded + other)
    assert n == 1
    assert '<details class="admonition hide above-input">\n<summary>\n<p class="collapsed' in html
    assert html.endswith(other)
    assert fix_theme_markup(html) == (html, 0)


def test_bertviz_menus_are_named() -> None:
    import torch
    from bertviz import head_view

    attn = tuple(torch.full((1, 2, 3, 3), 1 / 3) for _ in range(2))
    raw = head_view(attn, ["a", "b", "c"], html_action="return").data
    assert '<select id="layer">' in raw
    named = label_selects(raw)
    assert '<select id="layer" aria-label="Layer">' in named
    assert label_selects(named) == named
    neuron = '<span class="dropdown-label">Head: </span> <select id="att_head">'
    assert label_selects(neuron).endswith('<select id="att_head" aria-label="Head">')


def test_pandas_tables_get_a_tab_stop_and_other_tables_do_not() -> None:
    html = ('<table border="1" class="dataframe">x</table><table id="T_ab12">y</table>'
            '<table class="docutils align-default">z</table><table tabindex="0" class="dataframe">w</table>')
    assert focusable_output_tables(html) == (
        '<table tabindex="0" border="1" class="dataframe">x</table><table tabindex="0" id="T_ab12">y</table>'
        '<table class="docutils align-default">z</table><table tabindex="0" class="dataframe">w</table>')
