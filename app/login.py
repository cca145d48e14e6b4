"""The pages' login. `ui` and `dashboard` served on an address other machines reach must be given a key
(`--key` or APPRENTI_PAGE_KEY), which they hand to the page through its environment; a page started with one
shows nothing but this form until the key is typed, since it shows private passages and edits feedback."""
from __future__ import annotations

import hmac
import os

PAGE_KEY_VARIABLE = "APPRENTI_PAGE_KEY"


def logged_in() -> bool:
    """Whether this browser session may see the page: always without a key, else once the key was typed.
    Otherwise the login form is all the page shows."""
    import streamlit as st  # here: the CLI reads PAGE_KEY_VARIABLE without loading Streamlit
    key = os.environ.get(PAGE_KEY_VARIABLE)
    if not key or st.session_state.get("logged_in"):
        return True
    st.title("Apprenti")
    with st.form("login"):
        typed = st.text_input("Key", type="password",
                              help="The key given to `ui` or `dashboard` (--key or APPRENTI_PAGE_KEY)")
        submitted = st.form_submit_button("Log in")
    if submitted:
        # compare_digest: the time taken does not tell how much of a guess was right
        if hmac.compare_digest(typed.encode(), key.encode()):
            st.session_state["logged_in"] = True
            st.rerun()
        st.error("Wrong key.")
    return False
