# bash completion for pororoca, the command line of the pororoca data mover (docs/cli.md).
# Installed as share/bash-completion/completions/pororoca, where bash-completion loads it the first
# time `pororoca` is completed; it also works sourced on its own (without bash-completion's helpers,
# `--opt=value` and `ENDPOINT:/path` are then split as bash splits them).
# It completes the global options, the commands and their subcommands, each command's options, the
# values of the options that take a fixed set, and local files. It never asks the daemon anything.

_pororoca_global_opts="--socket --api --ca --api-token --api-endpoint --version --help"
_pororoca_commands="cp copy sync status submit wait cancel ls checksum endpoints policy accounting
  federation token stage release staging dashboard"
_pororoca_federation_commands="init add-institution add-endpoint add-service suspend revoke activate
  add-issuer policy show sign verify csr"

# The long options of command $1 (subcommand $2 for federation, policy, token).
_pororoca_options() {
  case "$1" in
    cp | copy | sync)
      echo "--recursive --streams --chunk --sync --overwrite --skip-existing --hard-links --json
        --no-progress --progress --detach --token --protection --transport --priority
        --submission-id --help" ;;
    status) echo "--files --state --json --help" ;;
    submit) echo "--wait --timeout --json --no-progress --priority --submission-id --token --help" ;;
    wait) echo "--json --progress --no-progress --timeout --help" ;;
    cancel | release) echo "--help" ;;
    staging) echo "--json --help" ;;
    dashboard) echo "--listen --help" ;;
    ls) echo "--long --limit --json --token --help" ;;
    checksum) echo "--chunk-size --json --token --help" ;;
    policy)
      echo "--recursive --overwrite --token --direction --classification --at --protection --json --help" ;;
    accounting) echo "--since --until --user --institution --json --help" ;;
    token) echo "--key --issuer --subject --audience --scope --lifetime --id --help" ;;
    stage) echo "--lease --ttl --wait --timeout --env-file --env-name --json --token --help" ;;
    federation)
      case "$2" in
        init) echo "--dir --name --days --help" ;;
        add-institution) echo "--dir --name --help" ;;
        add-endpoint)
          echo "--dir --institution --address --csr --out --days --not-before-offset --not-after-offset
            --help" ;;
        add-service) echo "--dir --csr --out --days --help" ;;
        suspend | revoke | activate) echo "--dir --help" ;;
        add-issuer) echo "--dir --institution --public-key --key-out --help" ;;
        policy) echo "--dir --rule --rules --before --help" ;;
        show) echo "--dir --json --help" ;;
        sign) echo "--dir --publish --help" ;;
        verify) echo "--authority-key --help" ;;
        csr) echo "--key --name --out --help" ;;
        *) echo "--help" ;;
      esac ;;
  esac
}

# Options that take a value: the word after them is that value, not a command or a path.
_pororoca_takes_value() {
  case "$1" in
    --socket | --api | --ca | --api-token | --api-endpoint | --streams | -n | --chunk | --token | \
      --protection | --transport | --priority | --submission-id | --state | --timeout | --limit | \
      --chunk-size | --direction | --classification | --at | --since | --until | --user | \
      --institution | --key | --issuer | --subject | --audience | --scope | --lifetime | --id | \
      --lease | --ttl | --env-file | --env-name | --listen | --dir | --name | --days | --address | --csr | \
      --out | --not-before-offset | --not-after-offset | --public-key | --key-out | --rule | \
      --rules | --before | --publish | --authority-key)
      return 0 ;;
  esac
  return 1
}

_pororoca_files() {
  if declare -F _filedir >/dev/null; then
    _filedir "$@"
  else
    compopt -o filenames 2>/dev/null
    if [ "$1" = -d ]; then
      mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
  fi
}

_pororoca() {
  local cur prev words cword split=false
  if declare -F _init_completion >/dev/null; then
    # -s: --opt=value gives prev=--opt, cur=value; -n :: ENDPOINT:/path stays one word.
    _init_completion -s -n : || return
  else
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
  fi
  COMPREPLY=()

  # The command (and its subcommand): the first words that are neither options nor their values.
  local i=1 cmd="" sub=""
  while [ "$i" -lt "$cword" ]; do
    local w=${words[i]}
    if [[ $w == -* ]]; then
      [[ $w != *=* ]] && _pororoca_takes_value "$w" && i=$((i + 1))
    elif [ -z "$cmd" ]; then
      cmd=$w
    elif [ -z "$sub" ]; then
      sub=$w
    fi
    i=$((i + 1))
  done

  # The value of an option.
  case "$prev" in
    --protection) mapfile -t COMPREPLY < <(compgen -W "clear integrity private" -- "$cur"); return ;;
    --transport) mapfile -t COMPREPLY < <(compgen -W "tcp ucx fabric" -- "$cur"); return ;;
    --priority) mapfile -t COMPREPLY < <(compgen -W "1 2 3 4 5" -- "$cur"); return ;;
    --direction) mapfile -t COMPREPLY < <(compgen -W "push pull" -- "$cur"); return ;;
    --state) mapfile -t COMPREPLY < <(compgen -W "succeeded skipped failed" -- "$cur"); return ;;
    --socket | --ca | --api-token | --token | --key | --csr | --public-key | --key-out | --publish | \
      --authority-key | --env-file | --rule | --rules)
      _pororoca_files; return ;;
    --dir | --out) _pororoca_files -d; return ;;
  esac
  if _pororoca_takes_value "$prev" || [ "$split" = true ]; then
    return # a free value (a URL, a name, a number)
  fi

  if [ -z "$cmd" ]; then
    if [[ $cur == -* ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$_pororoca_global_opts" -- "$cur")
    else
      mapfile -t COMPREPLY < <(compgen -W "$_pororoca_commands" -- "$cur")
    fi
    return
  fi
  if [ -z "$sub" ] && [[ $cur != -* ]]; then
    case "$cmd" in
      federation) mapfile -t COMPREPLY < <(compgen -W "$_pororoca_federation_commands" -- "$cur"); return ;;
      policy) mapfile -t COMPREPLY < <(compgen -W "check" -- "$cur"); return ;;
      token) mapfile -t COMPREPLY < <(compgen -W "issue" -- "$cur"); return ;;
    esac
  fi
  if [ "$cmd" = federation ] && [ "$sub" = policy ] && [[ $cur != -* ]]; then
    local third=${words[cword - 1]}
    if [ "$third" = policy ]; then
      mapfile -t COMPREPLY < <(compgen -W "add remove set" -- "$cur")
      return
    fi
  fi
  if [[ $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "$(_pororoca_options "$cmd" "$sub")" -- "$cur")
    return
  fi
  case "$cmd" in
    cp | copy | sync | ls | checksum | policy | submit) _pororoca_files ;;
    federation) [ "$sub" = verify ] && _pororoca_files ;;
  esac
}

complete -F _pororoca pororoca
