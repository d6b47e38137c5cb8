"""Not collected by the suite (no ``test_`` file prefix): ``test_tooling.py`` runs it in a
subprocess to prove that a failing browser test leaves a screenshot."""


def test_fails_after_drawing_something(bare_page):
    bare_page.set_content("<h1>Before the failure</h1>")
    assert bare_page.locator("h1").inner_text() == "Something else"
