"""The paper's user study (Table 3) as tooling: build a static questionnaire site from run folders
(`monkey.study.site`), tally the participants' exported answers (`monkey.study.tally`)."""
