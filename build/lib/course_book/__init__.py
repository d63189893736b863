"""course_book: the Sphinx extensions that build the course's site (the book), apart from the
runtime a student installs.

A student's notebook imports :mod:`course_utils`; nothing in it imports this package. The book
build (``_config.yml``'s ``sphinx.extra_extensions``) loads:

* :mod:`course_book.sphinx_offline`: no CDN; the pinned browser libraries served by the site;
* :mod:`course_book.sphinx_numbering`: exercises and figures numbered per chapter;
* :mod:`course_book.sphinx_a11y`: what axe-core reports on the theme's markup, fixed.

They need the ``book`` extra (Sphinx, Jupyter Book), which a student does not install.
"""
