#!/usr/bin/env bash
# A worked week of a two-person project: Ana and Ben share the project `killings` through a
# posix repository. Everything happens in a scratch directory (printed first, removed at the
# end), so it runs on any laptop with dsg and git installed:
#
#     bash docs/examples/two-person-week.sh            # dsg from PATH
#     DSG=.venv/bin/dsg bash docs/examples/two-person-week.sh
#
# Each command is printed after "$ " with what it prints, the scratch directory shown as
# /tmp/week; two-person-week.md is this script's output with notes. Exit 0 when every step did what the week expects.
set -euo pipefail

DSG=${DSG:-dsg}
if [[ $DSG == */* ]]; then DSG=$(realpath "$DSG"); else DSG=$(command -v "$DSG"); fi
W=$(mktemp -d "${TMPDIR:-/tmp}/dsg-week.XXXXXX")
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/repos" "$W/ana-config" "$W/ben-config"
printf 'user_name: Ana Ruiz\nuser_id: ana@hrdag.org\n' >"$W/ana-config/dsg.yml"
printf 'user_name: Ben Okafor\nuser_id: ben@hrdag.org\n' >"$W/ben-config/dsg.yml"
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 HOME="$W"

# as WHO: run the rest as Ana or Ben (their own dsg.yml and git identity), in their copy
as() {
  local who=$1
  shift
  export DSG_CONFIG_HOME="$W/$who-config"
  export GIT_AUTHOR_NAME=$who GIT_AUTHOR_EMAIL=$who@hrdag.org
  export GIT_COMMITTER_NAME=$who GIT_COMMITTER_EMAIL=$who@hrdag.org
  cd "$W/$who/killings"
  local name=Ana
  [[ $who == ben ]] && name=Ben
  printf '\n[%s, in /tmp/week/%s/killings]\n' "$name" "$who"
}
# note TEXT: what the person does by hand (edits files), shown as a comment
note() { printf '# %s\n' "$*"; }
# run CMD...: print it, run it; a non-zero exit fails the week unless EXPECT is set to it
run() {
  local shown=() a rc=0
  for a in "$@"; do
    [[ $a == "$DSG" ]] && a=dsg
    a=${a//"$W"//tmp/week}
    [[ $a == *" "* || $a == *"'"* ]] && a="\"$a\""
    shown+=("$a")
  done
  printf '$ %s\n' "${shown[*]}"
  "$@" 2>&1 | sed "s|$W|/tmp/week|g" || rc=${PIPESTATUS[0]}
  if [[ $rc != "${EXPECT:-0}" ]]; then
    echo "two-person-week: '${shown[*]}' exited $rc, expected ${EXPECT:-0}" >&2
    exit 1
  fi
  [[ $rc == 0 ]] || echo "(exit $rc)"
}
day() { printf '\n## %s\n' "$*"; }

echo "# scratch directory: $W"

day "Monday: Ana starts the project, Ben joins"
mkdir -p "$W/ana/killings" && as ana
note "Ana writes task1/input/events.csv (2 events) and task1/src/clean.py; the code goes to git"
mkdir -p task1/input task1/output task1/src
printf 'id,date,place\n1,2021-03-02,Norte\n2,2021-03-05,Sur\n' >task1/input/events.csv
printf 'import csv  # the cleaning script\n' >task1/src/clean.py
git init -q . && git add task1/src && git commit -qm "cleaning script"
run "$DSG" init --repo-type posix --host localhost --repo-path "$W/repos" \
  --repo-name killings --no-interactive -m "raw extract from the registry"
run cat .dsgconfig.yml
git add .dsgconfig.yml .gitignore && git commit -qm "dsg config"
note "Ana commits .dsgconfig.yml and .gitignore to git; Ben clones the git repository, then the data"
mkdir -p "$W/ben" && git clone -q "$W/ana/killings" "$W/ben/killings" && as ben
run "$DSG" clone
run "$DSG" status

day "Tuesday: Ben cleans the data and syncs; Ana picks it up"
as ben
note "Ben writes task1/output/events-clean.csv"
mkdir -p task1/output # dsg keeps files, not empty directories: Ana's empty output/ is not here
printf 'id,date,place\n1,2021-03-02,NORTE\n2,2021-03-05,SUR\n' >task1/output/events-clean.csv
run "$DSG" status
run "$DSG" sync -m "events cleaned: places upper-cased"
as ana
run "$DSG" status
run "$DSG" sync -m "pick up Ben's cleaning"

day "Wednesday: both fix the same file; a conflict, settled"
as ana
note "Ana adds event 3 to task1/input/events.csv"
printf 'id,date,place\n1,2021-03-02,Norte\n2,2021-03-05,Sur\n3,2021-03-09,Este\n' >task1/input/events.csv
run "$DSG" sync -m "event 3 added from the March batch"
as ben
note "Ben, not yet synced, corrects event 2's date in his task1/input/events.csv"
printf 'id,date,place\n1,2021-03-02,Norte\n2,2021-03-06,Sur\n' >task1/input/events.csv
EXPECT=3 run "$DSG" sync -m "event 2: date corrected"
run "$DSG" resolve task1/input/events.csv --use remote
run "$DSG" sync -m "keep Ana's events.csv; my date fix comes next"
run ls task1/input
note "Ben makes his date fix again in Ana's version (event 3 included)"
printf 'id,date,place\n1,2021-03-02,Norte\n2,2021-03-06,Sur\n3,2021-03-09,Este\n' >task1/input/events.csv
run "$DSG" sync -m "event 2: date corrected (2021-03-06, per the source)"
run "$DSG" clean
run "$DSG" clean --no-dry-run

day "Thursday: Ana tags the data behind the draft report"
as ana
run "$DSG" sync -m "up to date before the tag"
run "$DSG" tag v1.0 -m "data for the draft report"
run "$DSG" tags
run "$DSG" log -n 3

day "Friday: who changed what, an old version, and a check"
as ben
run "$DSG" sync -m "end of week"
run "$DSG" blame task1/input/events.csv
run "$DSG" snapfetch task1/input/events.csv --snapshot s1 -o "$W/events-s1.csv"
run cat "$W/events-s1.csv"
run "$DSG" list-files
run "$DSG" validate-chain
run "$DSG" validate-snapshot
