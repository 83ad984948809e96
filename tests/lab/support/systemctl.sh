#!/bin/bash
# rvlab: systemctl and journalctl emulation inside an emulated board (test facility).
# Installed as /usr/bin/systemctl and /usr/bin/journalctl in the board; dispatches on its name.
# Units come from /etc/systemd/system (plus <unit>.d/*.conf drop-ins). Runtime state lives in
# /run/rvlab/systemd, logs in /var/log/rvlab-journal/<unit>.log, and every start of a main
# process is recorded in /run/rvlab/systemd/starts/<unit> as "<seq> <epoch-ns> <kind> <pid>"
# with kind start|restart|auto-restart (the lab's tests read it).
set -u
shopt -s nullglob

UNIT_DIR=/etc/systemd/system
ST=/run/rvlab/systemd
JOURNAL=/var/log/rvlab-journal
SELF=/usr/bin/systemctl
SERVICE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Queries run often (every facts command asks): no process is started where a builtin does.
[ -d "$ST/starts" ] && [ -d "$ST/loaded" ] && [ -d "$JOURNAL" ] || mkdir -p "$ST/loaded" "$ST/starts" "$JOURNAL"
read -r HN </proc/sys/kernel/hostname

norm() { # sets REPLY
    case $1 in
    *.service | *.target | *.socket | *.timer | *.mount | *.path | *.slice) REPLY=$1 ;;
    *) REPLY=$1.service ;;
    esac
}

# A file's text into REPLY, each line ending in a newline (builtins only: systemctl reads the
# unit files on every start, enable and daemon-reload). Fails when it cannot be read.
read_text() {
    local l out=''
    { while IFS= read -r l || [ -n "$l" ]; do out+=$l$'\n'; done <"$1"; } 2>/dev/null || return 1
    REPLY=$out
}

# The unit's definition as on disk into REPLY: unit file then drop-ins, each followed by an
# empty line. Fails when there is no unit file.
disk_def_v() {
    local f=$UNIT_DIR/$1 d out=''
    [ -f "$f" ] || return 1
    for d in "$f" "$UNIT_DIR/$1.d"/*.conf; do
        read_text "$d" || return 1
        out+=$REPLY$'\n'
    done
    REPLY=$out
}

# Write the loaded definition atomically (readers never see half of it).
store_def() {
    printf '%s' "$2" >"$ST/loaded/$1.tmp" && mv -f "$ST/loaded/$1.tmp" "$ST/loaded/$1"
}

# Load a unit that the manager does not know yet (systemd loads units on demand).
ensure_loaded() {
    [ -f "$ST/loaded/$1" ] && return 0
    disk_def_v "$1" || return 1
    store_def "$1" "$REPLY"
}

changed_on_disk() {
    [ -f "$ST/loaded/$1" ] || return 1
    local disk=''
    disk_def_v "$1" && disk=$REPLY
    read_text "$ST/loaded/$1" || REPLY=''
    [ "$REPLY" != "$disk" ]
}

warn_changed() {
    if changed_on_disk "$1"; then
        echo "Warning: The unit file, source configuration file or drop-ins of $1 changed on disk. Run 'systemctl daemon-reload' to reload units." >&2
    fi
}

trim() { # sets REPLY
    local s=$1
    s="${s#"${s%%[![:space:]]*}"}"
    s="${s%"${s##*[![:space:]]}"}"
    REPLY=$s
}

# Parse a unit definition file into globals (SPEC_UNIT: the unit's name, for specifiers).
parse_def() {
    SPEC_UNIT=${2:-${1##*/}}
    DESC='' TYPE=simple RESTART=no RESTART_SEC=0.1 KILL_MODE=control-group REMAIN=no WORKDIR=''
    EXEC_START=() PRE=() ENVS=() ENVFILES=() WANTED=() INSTALL=0
    local section='' line buf='' key val
    while IFS= read -r line || [ -n "$line" ]; do
        trim "$line"; line=$REPLY
        if [ -n "$buf" ]; then
            case $line in \#* | \;*) continue ;; esac
            line="$buf $line"
            buf=''
        fi
        if [[ $line == *\\ ]]; then
            buf="${line%\\}"
            continue
        fi
        case $line in '' | \#* | \;*) continue ;; \[*\]) section=$line; continue ;; esac
        [[ $line == *=* ]] || continue
        trim "${line%%=*}"; key=$REPLY
        trim "${line#*=}"; val=$REPLY
        # unit specifiers: %n full name, %N name without suffix, %% a percent sign
        if [[ $val == *%* ]]; then
            val=${val//%%/$'\x01'}
            val=${val//%n/$SPEC_UNIT}
            val=${val//%N/${SPEC_UNIT%.*}}
            val=${val//$'\x01'/%}
        fi
        case $section in
        '[Unit]') [ "$key" = Description ] && DESC=$val ;;
        '[Service]')
            case $key in
            Type) TYPE=$val ;;
            Restart) RESTART=$val ;;
            RestartSec) RESTART_SEC=$val ;;
            KillMode) KILL_MODE=$val ;;
            RemainAfterExit) REMAIN=$val ;;
            WorkingDirectory) WORKDIR=$val ;;
            ExecStart) if [ -z "$val" ]; then EXEC_START=(); else EXEC_START+=("$val"); fi ;;
            ExecStartPre) if [ -z "$val" ]; then PRE=(); else PRE+=("$val"); fi ;;
            Environment) if [ -z "$val" ]; then ENVS=(); else ENVS+=("$val"); fi ;;
            EnvironmentFile) if [ -z "$val" ]; then ENVFILES=(); else ENVFILES+=("$val"); fi ;;
            esac
            ;;
        '[Install]')
            case $key in
            WantedBy | RequiredBy) INSTALL=1; split_words "$val"; WANTED+=("${WORDS[@]}") ;;
            Alias | Also | UpheldBy) INSTALL=1 ;;
            esac
            ;;
        esac
    done <"$1"
}

# systemd's word splitting: whitespace separated, "double" and 'single' quotes, backslash escapes.
split_words() {
    WORDS=()
    local s=$1 i=0 n=${#1} c w='' inw=0 q=''
    while ((i < n)); do
        c=${s:i:1}
        if [ -n "$q" ]; then
            if [ "$c" = "$q" ]; then
                q=''
            elif [ "$c" = '\' ] && ((i + 1 < n)); then
                i=$((i + 1))
                w+=${s:i:1}
            else
                w+=$c
            fi
        else
            case $c in
            [[:space:]]) if ((inw)); then WORDS+=("$w"); w=''; inw=0; fi ;;
            \" | \') q=$c; inw=1 ;;
            \\) i=$((i + 1)); w+=${s:i:1}; inw=1 ;;
            *) w+=$c; inw=1 ;;
            esac
        fi
        i=$((i + 1))
    done
    if ((inw)); then WORDS+=("$w"); fi
}

# Builds ENVMAP/ENVORDER from Environment= then EnvironmentFile= (files override, as in systemd).
build_env() {
    declare -gA ENVMAP=()
    ENVORDER=()
    local e kv f opt line k v
    for e in "${ENVS[@]}"; do
        split_words "$e"
        for kv in "${WORDS[@]}"; do
            [[ $kv == *=* ]] || continue
            set_env "${kv%%=*}" "${kv#*=}"
        done
    done
    for f in "${ENVFILES[@]}"; do
        opt=0
        if [[ $f == -* ]]; then opt=1; f=${f#-}; fi
        if [ ! -r "$f" ]; then
            ((opt)) && continue
            ENV_ERROR="Failed to load environment files: No such file or directory"
            return 1
        fi
        while IFS= read -r line || [ -n "$line" ]; do
            trim "$line"; line=$REPLY
            case $line in '' | \#* | \;*) continue ;; esac
            [[ $line == *=* ]] || continue
            trim "${line%%=*}"; k=$REPLY
            trim "${line#*=}"; v=$REPLY
            if [[ $v == \"*\" && ${#v} -ge 2 ]]; then
                v=${v:1:${#v}-2}
            elif [[ $v == \'*\' && ${#v} -ge 2 ]]; then
                v=${v:1:${#v}-2}
            fi
            set_env "$k" "$v"
        done <"$f"
    done
    return 0
}

set_env() {
    [ -n "${ENVMAP[$1]+x}" ] || ENVORDER+=("$1")
    ENVMAP[$1]=$2
}

env_args() {
    ENVARGS=("PATH=$SERVICE_PATH" "LANG=C.UTF-8" "INVOCATION_ID=$RANDOM$RANDOM")
    local k
    for k in "${ENVORDER[@]}"; do ENVARGS+=("$k=${ENVMAP[$k]}"); done
}

# Splits a command line and expands $VAR (into words) and ${VAR} (inside a word) like systemd.
# Sets CMD_ARGV and CMD_IGNORE (1 when prefixed with '-').
command_argv() {
    local line=$1 w name out
    CMD_IGNORE=0
    split_words "$line"
    CMD_ARGV=()
    local first=1
    for w in "${WORDS[@]}"; do
        if ((first)); then
            while [[ $w == [-@+!:]* ]]; do
                [[ $w == -* ]] && CMD_IGNORE=1
                w=${w:1}
            done
            first=0
        fi
        if [[ $w =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
            name=${BASH_REMATCH[1]}
            if [ -n "${ENVMAP[$name]+x}" ]; then
                local -a parts
                read -r -a parts <<<"${ENVMAP[$name]}"
                CMD_ARGV+=("${parts[@]}")
            fi
            continue
        fi
        out=''
        while [[ $w =~ ^([^$]*)\$\{([A-Za-z_][A-Za-z0-9_]*)\}(.*)$ ]]; do
            name=${BASH_REMATCH[2]}
            out+=${BASH_REMATCH[1]}${ENVMAP[$name]-}
            w=${BASH_REMATCH[3]}
        done
        CMD_ARGV+=("$out$w")
    done
}

jlog() { # ident message...
    local ident=$1
    shift
    printf '%(%b %d %H:%M:%S)T %s %s: %s\n' -1 "$HN" "$ident" "$*" >>"$JOURNAL/$UNIT.log"
}

# Reads the pid of the logged process from the first line, then prefixes every line.
pipe_log() {
    local name=$1 pid l
    IFS= read -r pid || return 0
    while IFS= read -r l; do
        printf '%(%b %d %H:%M:%S)T %s %s[%s]: %s\n' -1 "$HN" "$name" "$pid" "$l"
    done >>"$JOURNAL/$UNIT.log"
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Atomic status update (readers never see a half-written file).
set_status() {
    printf '%s\n' "$2" >"$ST/$1.status.$$" && mv -f "$ST/$1.status.$$" "$ST/$1.status"
}

# Alive and not a zombie (a child that exited but was not waited for yet).
running() {
    local s
    { read -r s; } 2>/dev/null <"/proc/$1/stat" || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

unit_state() { # prints active|activating|deactivating|auto-restart|failed|inactive
    unit_state_v "$1"
    printf '%s' "$REPLY"
}

unit_state_v() { # unit_state into REPLY
    local u=$1 sup='' st=''
    { read -r sup; } 2>/dev/null <"$ST/$u.sup"
    { read -r st; } 2>/dev/null <"$ST/$u.status"
    st=${st%% *}
    if alive "$sup"; then
        REPLY=${st:-activating}
    elif [ "$st" = failed ]; then
        REPLY=failed
    else
        REPLY=inactive
    fi
}

# Sleep without starting a process (the supervisors poll while a unit starts, on every board
# at once): a read that times out on a FIFO opened read-write, which never ends nor has data.
nap() {
    if [ -z "${NAP_FD:-}" ]; then
        local f=$ST/.nap.$BASHPID
        if mkfifo "$f" 2>/dev/null && exec {NAP_FD}<>"$f"; then rm -f "$f"; else rm -f "$f"; NAP_FD=''; sleep "$1"; return 0; fi
    fi
    read -r -t "$1" -u "$NAP_FD" _
    return 0
}

# Has the unit sent READY=1 (sd_notify datagrams, appended by socat)?
notified_ready() {
    local l
    while IFS= read -r l || [ -n "$l" ]; do
        [[ $l == *READY=1* ]] && return 0
        l=''
    done 2>/dev/null <"$ST/$UNIT.notified"
    return 1
}

seconds() { # systemd time span -> seconds for sleep
    local v=$1
    case $v in
    *ms) v=${v%ms}; printf '%d.%03d' $((v / 1000)) $((v % 1000)) ;;
    *min) printf '%d' $((${v%min} * 60)) ;;
    *s) printf '%s' "${v%s}" ;;
    '' | infinity) printf 0 ;;
    *) printf '%s' "$v" ;;
    esac
}

record_start() { # kind pid (builtins only: the time is taken right after the fork)
    local f=$ST/starts/$UNIT n=0 l t=${EPOCHREALTIME/./}
    [ -f "$f" ] && while IFS= read -r l; do n=$((n + 1)); done <"$f"
    printf '%d %s %s %s\n' $((n + 1)) "${t}000" "$1" "$2" >>"$f"
}

# Exec the unit's command (CMD_ARGV) with exactly ENVARGS as its environment, as systemd gives
# a service a clean one. The supervisor un-exported everything it inherited when it started, so
# `export` then `exec` do it without an env(1) process per command; a name bash cannot hold
# (systemd takes more than shell identifiers) goes through `env -i`.
exec_clean() {
    export -n PWD OLDPWD SHLVL # (bash exports these again when cd sets them)
    export "${ENVARGS[@]}" 2>/dev/null || exec env -i "${ENVARGS[@]}" "${CMD_ARGV[@]}"
    exec "${CMD_ARGV[@]}"
}

# The background supervisor of one unit: ExecStartPre, ExecStart, Restart=.
supervise() {
    UNIT=$1
    local kind=$2 pre rc main v
    for v in $(compgen -e); do export -n "$v"; done
    echo $$ >"$ST/$UNIT.sup"
    parse_def "$ST/loaded/$UNIT"
    local name=${UNIT%.service}
    local st=''
    while :; do
        # (start_unit has just said so for the first start: no second rename)
        { read -r st <"$ST/$UNIT.status"; } 2>/dev/null
        [ "$st" = activating ] || set_status "$UNIT" activating
        st=''
        jlog 'systemd[1]' "Starting $UNIT${DESC:+ - $DESC}..."
        ENV_ERROR=''
        if ! build_env; then
            jlog 'systemd[1]' "$UNIT: $ENV_ERROR"
            jlog 'systemd[1]' "$UNIT: Failed with result 'resources'."
            jlog 'systemd[1]' "Failed to start $UNIT${DESC:+ - $DESC}."
            set_status "$UNIT" "failed resources"
            exit 0
        fi
        env_args
        cd "${WORKDIR:-/}" 2>/dev/null || cd /
        for pre in "${PRE[@]}"; do
            command_argv "$pre"
            (
                printf '%s\n' "$BASHPID"
                [ -z "${NAP_FD:-}" ] || exec {NAP_FD}>&-
                exec_clean
            ) </dev/null > >(pipe_log "${CMD_ARGV[0]##*/}") 2>&1
            rc=$?
            if ((rc != 0)); then
                if ((CMD_IGNORE)); then
                    jlog 'systemd[1]' "$UNIT: ExecStartPre ${CMD_ARGV[0]} exited with status $rc (ignored)."
                else
                    jlog 'systemd[1]' "$UNIT: Control process exited, code=exited, status=$rc/FAILURE"
                    jlog 'systemd[1]' "$UNIT: Failed with result 'exit-code'."
                    jlog 'systemd[1]' "Failed to start $UNIT${DESC:+ - $DESC}."
                    set_status "$UNIT" "failed exit-code"
                    exit 0
                fi
            fi
        done
        if ((${#EXEC_START[@]} == 0)); then
            jlog 'systemd[1]' "$UNIT: Service has no ExecStart= setting. Refusing."
            set_status "$UNIT" "failed bad-setting"
            exit 0
        fi
        command_argv "${EXEC_START[0]}"
        local notify_pid=''
        if [ "$TYPE" = notify ]; then
            # sd_notify: the service sends READY=1 to $NOTIFY_SOCKET; start waits for it.
            if [ -e "$ST/$UNIT.notify" ] || [ -L "$ST/$UNIT.notify" ]; then rm -f "$ST/$UNIT.notify"; fi
            : >"$ST/$UNIT.notified"
            socat -u "UNIX-RECV:$ST/$UNIT.notify" "OPEN:$ST/$UNIT.notified,append" </dev/null >/dev/null 2>&1 &
            notify_pid=$!
            while [ ! -S "$ST/$UNIT.notify" ] && alive "$notify_pid"; do nap 0.01; done
            if [ -S "$ST/$UNIT.notify" ]; then
                ENVARGS+=("NOTIFY_SOCKET=$ST/$UNIT.notify")
            else
                jlog 'rvlab[1]' "socat is missing (apt-get install socat): $UNIT started as Type=simple"
                notify_pid=''
            fi
        fi
        (
            printf '%s\n' "$BASHPID"
            [ -z "${NAP_FD:-}" ] || exec {NAP_FD}>&-
            exec_clean
        ) </dev/null > >(pipe_log "$name") 2>&1 &
        main=$!
        echo "$main" >"$ST/$UNIT.main"
        record_start "$kind" "$main"
        if [ "$TYPE" = oneshot ]; then
            wait "$main"
            rc=$?
            rm -f "$ST/$UNIT.main"
            if ((rc != 0)); then
                jlog 'systemd[1]' "$UNIT: Main process exited, code=exited, status=$rc/FAILURE"
                set_status "$UNIT" "failed exit-code"
            elif [ "$REMAIN" = yes ]; then
                jlog 'systemd[1]' "Finished $UNIT${DESC:+ - $DESC}."
                set_status "$UNIT" "active exited"
                # keep the supervisor alive so that the unit stays active
                while [ ! -e "$ST/$UNIT.stopping" ]; do sleep 0.2; done
                set_status "$UNIT" inactive
            else
                jlog 'systemd[1]' "Finished $UNIT${DESC:+ - $DESC}."
                set_status "$UNIT" inactive
            fi
            exit 0
        fi
        if [ -n "$notify_pid" ]; then
            while running "$main" && ! notified_ready; do nap 0.02; done
            kill "$notify_pid" 2>/dev/null
            wait "$notify_pid" 2>/dev/null
        fi
        if running "$main"; then
            set_status "$UNIT" "active $main"
            jlog 'systemd[1]' "Started $UNIT${DESC:+ - $DESC}."
        fi
        wait "$main"
        rc=$?
        rm -f "$ST/$UNIT.main"
        if [ -e "$ST/$UNIT.stopping" ]; then
            exit 0
        fi
        if ((rc == 0)); then
            jlog 'systemd[1]' "$UNIT: Main process exited, code=exited, status=0/SUCCESS"
        else
            jlog 'systemd[1]' "$UNIT: Main process exited, code=exited, status=$rc/FAILURE"
        fi
        local again=0
        case $RESTART in
        always) again=1 ;;
        on-failure | on-abnormal) ((rc != 0)) && again=1 ;;
        esac
        if ((!again)); then
            if ((rc == 0)); then set_status "$UNIT" inactive; else set_status "$UNIT" "failed exit-code"; fi
            exit 0
        fi
        set_status "$UNIT" "auto-restart"
        sleep "$(seconds "$RESTART_SEC")"
        [ -e "$ST/$UNIT.stopping" ] && exit 0
        local count
        count=$(grep -c ' auto-restart ' "$ST/starts/$UNIT" 2>/dev/null)
        jlog 'systemd[1]' "$UNIT: Scheduled restart job, restart counter is at $((count + 1))."
        kind=auto-restart
    done
}

start_unit() { # unit kind
    local u=$1 kind=$2 st sup
    UNIT=$u
    if ! ensure_loaded "$u"; then
        echo "Failed to start $u: Unit $u not found." >&2
        return 5
    fi
    warn_changed "$u"
    unit_state_v "$u"; st=$REPLY
    case $st in active | activating | auto-restart) return 0 ;; esac
    # (no rm process for the files a unit started for the first time never had)
    if [ -e "$ST/$u.stopping" ] || [ -e "$ST/$u.sup" ]; then rm -f "$ST/$u.stopping" "$ST/$u.sup"; fi
    set_status "$u" activating
    setsid -f /bin/bash "$SELF" __supervise "$u" "$kind" </dev/null >/dev/null 2>&1 9>&-
    # --no-block: the job is queued, systemctl returns at once (the unit is "activating").
    ((${NOBLOCK:-0})) && return 0
    # Waiting for the job (e.g. READY=1) must not hold up other systemctl calls on the board.
    flock -u 9 2>/dev/null
    while :; do
        st='' sup=''
        { read -r st <"$ST/$u.status"; } 2>/dev/null
        case $st in activating | '') ;; *) break ;; esac
        { read -r sup <"$ST/$u.sup"; } 2>/dev/null
        if [ -n "$sup" ] && ! alive "$sup"; then break; fi
        nap 0.02
    done
    flock 9 2>/dev/null
    case $st in
    active* | inactive) return 0 ;;
    esac
    echo "Job for $u failed because the control process exited with error code." >&2
    echo "See \"systemctl status $u\" and \"journalctl -xeu $u\" for details." >&2
    return 1
}

stop_unit() { # unit
    local u=$1 sup main i
    UNIT=$u
    sup=$(cat "$ST/$u.sup" 2>/dev/null)
    if ! alive "$sup"; then
        [ "$(unit_state "$u")" = failed ] || set_status "$u" inactive
        return 0
    fi
    parse_def "$ST/loaded/$u"
    touch "$ST/$u.stopping"
    main=$(cat "$ST/$u.main" 2>/dev/null)
    jlog 'systemd[1]' "Stopping $u${DESC:+ - $DESC}..."
    set_status "$u" deactivating
    if alive "$main"; then
        kill -TERM "$main" 2>/dev/null
        for ((i = 0; i < 4500; i++)); do alive "$main" || break; nap 0.02; done
        alive "$main" && kill -KILL "$main" 2>/dev/null
    fi
    for ((i = 0; i < 100; i++)); do alive "$sup" || break; nap 0.02; done
    alive "$sup" && kill -TERM "$sup" 2>/dev/null
    if [ "$KILL_MODE" != process ]; then
        kill -KILL -- "-$sup" 2>/dev/null
    fi
    for ((i = 0; i < 100; i++)); do alive "$sup" || break; nap 0.02; done
    rm -f "$ST/$u.stopping" "$ST/$u.main" "$ST/$u.sup"
    set_status "$u" inactive
    jlog 'systemd[1]' "$u: Deactivated successfully."
    jlog 'systemd[1]' "Stopped $u${DESC:+ - $DESC}."
}

has_wanted_links() { # unit: is one .wants/ or .requires/ symlink there?
    local l
    for l in "$UNIT_DIR"/*.wants/"$1" "$UNIT_DIR"/*.requires/"$1"; do
        [ -L "$l" ] && return 0
    done
    return 1
}

wanted_links() { # unit -> existing .wants/ symlinks pointing at it
    local l
    for l in "$UNIT_DIR"/*.wants/"$1" "$UNIT_DIR"/*.requires/"$1"; do
        [ -L "$l" ] && printf '%s\n' "$l"
    done
}

enable_unit() {
    local u=$1 t link made=0
    if [ ! -f "$UNIT_DIR/$u" ]; then
        echo "Failed to enable unit: Unit file $u does not exist." >&2
        return 1
    fi
    parse_def "$UNIT_DIR/$u"
    if ((!INSTALL)); then
        echo "The unit files have no installation config (WantedBy=, RequiredBy=, UpheldBy=, Also=, or Alias= settings in the [Install] section, and DefaultInstance= for template units). This means they are not meant to be enabled or disabled using systemctl." >&2
        return 0
    fi
    for t in "${WANTED[@]}"; do
        link=$UNIT_DIR/$t.wants/$u
        if [ ! -L "$link" ]; then
            mkdir -p "$UNIT_DIR/$t.wants"
            ln -s "$UNIT_DIR/$u" "$link"
            echo "Created symlink $link → $UNIT_DIR/$u." >&2
            made=1
        fi
    done

    return 0
}

disable_unit() {
    local u=$1 l
    if [ ! -f "$UNIT_DIR/$u" ] && [ -z "$(wanted_links "$u")" ]; then
        echo "Failed to disable unit: Unit file $u does not exist." >&2
        return 1
    fi
    while IFS= read -r l; do
        [ -n "$l" ] || continue
        rm -f "$l"
        echo "Removed \"$l\"." >&2
    done < <(wanted_links "$u")
    return 0
}

enabled_state() { # prints enabled|disabled|static, fails when there is no unit file
    local u=$1
    [ -f "$UNIT_DIR/$u" ] || return 1
    parse_def "$UNIT_DIR/$u"
    if has_wanted_links "$u"; then
        echo enabled
    elif ((INSTALL)); then
        echo disabled
    else
        echo static
    fi
}

daemon_reload() {
    local f u new
    for f in "$ST/loaded"/*; do
        u=${f##*/}
        [[ $u == *.tmp ]] && continue
        if disk_def_v "$u"; then
            # Rewritten only when it changed (no process for the units that did not).
            new=$REPLY
            read_text "$f" && [ "$REPLY" = "$new" ] || store_def "$u" "$new"
        else
            unit_state_v "$u"
            case $REPLY in active | activating | auto-restart) ;; *) rm -f "$f" ;; esac
        fi
    done
    for f in "$UNIT_DIR"/*.service; do ensure_loaded "${f##*/}"; done
}

nrestarts() {
    local f=$ST/starts/$1 n=0 kind l
    [ -f "$f" ] || { echo 0; return; }
    while read -r _ _ kind _; do
        if [ "$kind" = auto-restart ]; then n=$((n + 1)); else n=0; fi
    done <"$f"
    echo $n
}

show_prop() { # unit prop
    local u=$1 p=$2 st
    case $p in
    Id) echo "$u" ;;
    LoadState) if [ -f "$ST/loaded/$u" ] || [ -f "$UNIT_DIR/$u" ]; then echo loaded; else echo not-found; fi ;;
    ActiveState)
        unit_state_v "$u"; st=$REPLY
        case $st in auto-restart) echo activating ;; *) echo "$st" ;; esac
        ;;
    SubState)
        unit_state_v "$u"; st=$REPLY
        case $st in
        active) if grep -q '^active exited' "$ST/$u.status" 2>/dev/null; then echo exited; else echo running; fi ;;
        activating) echo start-pre ;; auto-restart) echo auto-restart ;; deactivating) echo stop-sigterm ;;
        failed) echo failed ;; *) echo dead ;;
        esac
        ;;
    UnitFileState) enabled_state "$u" 2>/dev/null || echo "" ;;
    MainPID) st=''; { read -r st; } 2>/dev/null <"$ST/$u.main"; if alive "$st"; then echo "$st"; else echo 0; fi ;;
    NRestarts) nrestarts "$u" ;;
    NeedDaemonReload) if changed_on_disk "$u"; then echo yes; else echo no; fi ;;
    FragmentPath) [ -f "$UNIT_DIR/$u" ] && echo "$UNIT_DIR/$u" || echo "" ;;
    Description)
        if [ -f "$ST/loaded/$u" ]; then parse_def "$ST/loaded/$u"; echo "$DESC"; else echo "$u"; fi
        ;;
    *) echo "" ;;
    esac
}

status_unit() {
    local u=$1 st en loaded=loaded main since='' active_line
    if [ ! -f "$ST/loaded/$u" ] && [ ! -f "$UNIT_DIR/$u" ]; then
        echo "Unit $u could not be found." >&2
        return 4
    fi
    ensure_loaded "$u"
    parse_def "$ST/loaded/$u"
    en=$(enabled_state "$u" 2>/dev/null || echo disabled)
    st=$(unit_state "$u")
    main=$(cat "$ST/$u.main" 2>/dev/null)
    if [ -f "$ST/starts/$u" ]; then
        local ns
        ns=$(tail -n 1 "$ST/starts/$u" | cut -d' ' -f2)
        since=$(date -d "@$((ns / 1000000000))" '+%a %Y-%m-%d %H:%M:%S %Z')
    fi
    case $st in
    active) active_line="active (running) since $since" ;;
    activating) active_line="activating (start-pre)" ;;
    auto-restart) active_line="activating (auto-restart)" ;;
    deactivating) active_line="deactivating (stop-sigterm)" ;;
    failed) active_line="failed (Result: $(cut -d' ' -f2 "$ST/$u.status" 2>/dev/null))" ;;
    *) active_line="inactive (dead)" ;;
    esac
    local dot='○'
    [ "$st" = active ] && dot='●'
    [ "$st" = failed ] && dot='×'
    echo "$dot $u${DESC:+ - $DESC}"
    echo "     Loaded: $loaded ($UNIT_DIR/$u; $en; preset: disabled)"
    echo "     Active: $active_line"
    if alive "$main"; then
        echo "   Main PID: $main ($(cat "/proc/$main/comm" 2>/dev/null))"
    fi
    if changed_on_disk "$u"; then
        echo ""
        echo "Warning: The unit file, source configuration file or drop-ins of $u changed on disk. Run 'systemctl daemon-reload' to reload units."
    fi
    if [ -f "$JOURNAL/$u.log" ]; then
        echo ""
        tail -n 10 "$JOURNAL/$u.log"
    fi
    case $st in active) return 0 ;; *) return 3 ;; esac
}

systemctl_main() {
    local verb='' quiet=0 now=0 value=0 props=() units=() a
    while (($#)); do
        a=$1
        shift
        case $a in
        -q | --quiet) quiet=1 ;;
        --now) now=1 ;;
        --value) value=1 ;;
        -p) props+=("${1//,/ }"); shift ;;
        --property=*) props+=("${a#--property=}") ;;
        -p*) props+=("${a#-p}") ;;
        --no-block) NOBLOCK=1 ;;
        --no-reload) NORELOAD=1 ;;
        --no-pager | --no-ask-password | --system | -l | --full | --no-legend | --plain) ;;
        --version) echo "systemd 255 (255-rvlab)"; return 0 ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$a; else norm "$a"; units+=("$REPLY"); fi ;;
        esac
    done
    if [ "$verb" = __supervise ]; then
        supervise "${units[0]}" "${units[1]%.service}"
        return 0
    fi
    # Changes are serialized per board; queries never wait for a running start job.
    case $verb in
    is-active | is-enabled | is-failed | status | show | cat | list-units | list-unit-files | is-system-running | '') ;;
    *)
        exec 9>"$ST/lock"
        flock 9
        ;;
    esac
    local rc=0 u r
    case $verb in
    daemon-reload)
        # Every explicit daemon-reload is recorded (board.daemon_reloads()).
        printf '%s\n' "$EPOCHREALTIME" >>"$ST/daemon-reloads"
        daemon_reload
        ;;
    daemon-reexec | reset-failed)
        for u in "${units[@]}"; do [ "$(unit_state "$u")" = failed ] && set_status "$u" inactive; done
        ;;
    start) for u in "${units[@]}"; do start_unit "$u" start || rc=$?; done ;;
    stop)
        for u in "${units[@]}"; do
            if [ ! -f "$ST/loaded/$u" ] && [ ! -f "$UNIT_DIR/$u" ]; then
                echo "Failed to stop $u: Unit $u not loaded." >&2
                rc=5
                continue
            fi
            warn_changed "$u"
            stop_unit "$u"
        done
        ;;
    restart | try-restart | reload-or-restart)
        for u in "${units[@]}"; do
            if ! ensure_loaded "$u"; then
                echo "Failed to restart $u: Unit $u not found." >&2
                rc=5
                continue
            fi
            if [ "$verb" = try-restart ] && [ "$(unit_state "$u")" != active ]; then continue; fi
            warn_changed "$u"
            stop_unit "$u"
            start_unit "$u" restart 2>/dev/null || rc=$?
        done
        ;;
    enable)
        for u in "${units[@]}"; do enable_unit "$u" || rc=$?; done
        # systemctl enable reloads the manager after linking, whether or not a link was made,
        # unless --no-reload (systemctl-enable.c; docs/k3s-behaviour.md §3.5), and --now starts
        # after that reload. Recorded like an explicit daemon-reload (it is the same reload).
        if ((!${NORELOAD:-0})); then
            printf '%s\n' "$EPOCHREALTIME" >>"$ST/daemon-reloads"
            daemon_reload
        fi
        if ((now && rc == 0)); then for u in "${units[@]}"; do start_unit "$u" start || rc=$?; done; fi
        ;;
    disable)
        for u in "${units[@]}"; do disable_unit "$u" || rc=$?; done
        if ((!${NORELOAD:-0})); then
            printf '%s\n' "$EPOCHREALTIME" >>"$ST/daemon-reloads"
            daemon_reload
        fi
        if ((now)); then for u in "${units[@]}"; do stop_unit "$u"; done; fi
        ;;
    is-active)
        rc=3
        for u in "${units[@]}"; do
            unit_state_v "$u"; r=$REPLY
            case $r in auto-restart) r=activating ;; esac
            ((quiet)) || echo "$r"
            [ "$r" = active ] && rc=0
        done
        ;;
    is-failed)
        rc=1
        for u in "${units[@]}"; do
            r=$(unit_state "$u")
            ((quiet)) || echo "$r"
            [ "$r" = failed ] && rc=0
        done
        ;;
    is-enabled)
        rc=1
        for u in "${units[@]}"; do
            if r=$(enabled_state "$u"); then
                ((quiet)) || echo "$r"
                case $r in enabled | static) rc=0 ;; esac
            else
                echo "Failed to get unit file state for $u: No such file or directory" >&2
            fi
        done
        ;;
    status)
        for u in "${units[@]}"; do status_unit "$u" || rc=$?; done
        ;;
    show)
        local p
        ((${#props[@]})) || props=(Id LoadState ActiveState SubState UnitFileState MainPID NRestarts NeedDaemonReload)
        local first=1
        for u in "${units[@]}"; do
            # As systemctl: a blank line between two units' properties.
            ((first)) || echo
            first=0
            for p in ${props[*]}; do
                ((value)) || printf '%s=' "$p"
                show_prop "$u" "$p"
            done
        done
        ;;
    cat)
        for u in "${units[@]}"; do
            if [ -f "$UNIT_DIR/$u" ]; then echo "# $UNIT_DIR/$u"; cat "$UNIT_DIR/$u"; else
                echo "No files found for $u." >&2
                rc=1
            fi
        done
        ;;
    is-system-running) echo running ;;
    list-unit-files)
        echo "UNIT FILE STATE PRESET"
        for a in "$UNIT_DIR"/*.service; do
            u=${a##*/}
            if ((${#units[@]})) && [[ " ${units[*]} " != *" $u "* ]]; then continue; fi
            printf '%s %s disabled\n' "$u" "$(enabled_state "$u")"
        done
        ;;
    '' | list-units)
        for a in "$ST/loaded"/*; do
            u=${a##*/}
            printf '%s loaded %s\n' "$u" "$(unit_state "$u")"
        done
        ;;
    *)
        echo "Unknown command verb '$verb'." >&2
        rc=1
        ;;
    esac
    return $rc
}

journalctl_main() {
    local units=() lines='' follow=0 cat=0 a
    while (($#)); do
        a=$1
        shift
        case $a in
        -u | --unit) norm "$1"; units+=("$REPLY"); shift ;;
        --unit=*) norm "${a#--unit=}"; units+=("$REPLY") ;;
        -u*) norm "${a#-u}"; units+=("$REPLY") ;;
        -n | --lines) lines=$1; shift ;;
        --lines=*) lines=${a#--lines=} ;;
        -n*) lines=${a#-n} ;;
        -f | --follow) follow=1 ;;
        -o | --output) [ "$1" = cat ] && cat=1; shift ;;
        --output=cat | -ocat) cat=1 ;;
        -xeu) norm "$1"; units+=("$REPLY"); shift ;;
        --since | --until | -S | -U | -p | --priority | -t | --identifier) shift ;;
        *) ;;
        esac
    done
    local files=() u
    if ((${#units[@]})); then
        for u in "${units[@]}"; do [ -f "$JOURNAL/$u.log" ] && files+=("$JOURNAL/$u.log"); done
    else
        files=("$JOURNAL"/*.log)
    fi
    if ((${#files[@]} == 0)); then
        ((follow)) || { echo "-- No entries --"; return 0; }
    fi
    local filter=(cat)
    ((cat)) && filter=(sed -E 's/^[A-Z][a-z]{2} [0-9]{2} [0-9:]{8} [^ ]+ [^:]+: //')
    if ((follow)); then
        tail -n "${lines:-10}" -F "${files[@]}" 2>/dev/null | "${filter[@]}"
    elif [ -n "$lines" ]; then
        cat "${files[@]}" | tail -n "$lines" | "${filter[@]}"
    else
        cat "${files[@]}" | "${filter[@]}"
    fi
}

case ${0##*/} in
journalctl*) journalctl_main "$@" ;;
*) systemctl_main "$@" ;;
esac
