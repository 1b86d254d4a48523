/* The map page's words, in Korean and English.
 *
 * Every label a person sees comes from here: static ones through the data-i18n,
 * data-i18n-placeholder and data-i18n-title attributes of index.html (see I18N.apply),
 * the rest through I18N.t(key, params) in app.js. Class names and statuses are keys too
 * ("class.garbage", "status.new"); an unknown class or status shows as sent.
 *
 * The language is the one chosen last on this browser (localStorage "patrol-office-lang"),
 * else Korean when navigator.language says so, else English.
 */
(function () {
  "use strict";

  var ko = {
    "title": "민원 요소 지도",
    "lang.switch": "English",
    "lang.switch.title": "Switch to English",
    "login.user": "사용자",
    "login.password": "비밀번호",
    "login.submit": "로그인",
    "login.logout": "로그아웃",
    "login.whoami": "{user} 님 로그인됨",
    "login.failed": "로그인 실패",
    "login.needed": "로그인이 필요합니다",
    "filters": "필터",
    "filter.class": "종류",
    "filter.status": "상태",
    "filter.from": "시작일",
    "filter.to": "종료일",
    "filter.area": "지도에 보이는 영역만",
    "filter.vehicle": "차량",
    "filter.vehicle.all": "모든 차량",
    "filter.reset": "필터 초기화",
    "csv": "CSV 내보내기",
    "heat": "히트맵",
    "legend": "범례",
    "legend.unit": "순찰 차량",
    "list": "민원",
    "list.count": "{n}건",
    "list.empty": "조건에 맞는 민원이 없습니다",
    "list.sightings": "{n}회 발견",
    "list.loading": "불러오는 중…",
    "fleet": "차량 상태",
    "fleet.empty": "등록된 차량이 없습니다",
    "fleet.online": "온라인",
    "fleet.offline": "오프라인",
    "fleet.last_seen": "마지막 수신",
    "fleet.position": "마지막 위치",
    "fleet.fps": "처리 속도",
    "fleet.fps.unit": "{v} fps",
    "fleet.pending": "전송 대기",
    "fleet.gps_fix": "GPS 수신",
    "fleet.broker": "브로커 연결",
    "fleet.disk": "디스크 여유",
    "fleet.config_version": "설정 버전",
    "fleet.agent_version": "에이전트",
    "fleet.model": "모델",
    "fleet.no_position": "위치 없음",
    "fleet.telemetry": "상태 보고",
    "fleet.no_telemetry": "아직 없음",
    "yes": "예",
    "no": "아니요",
    "none": "—",
    "ago.s": "{n}초 전",
    "ago.m": "{n}분 전",
    "ago.h": "{n}시간 전",
    "ago.d": "{n}일 전",
    "popup.class": "종류",
    "popup.score": "신뢰도",
    "popup.first_seen": "처음 발견",
    "popup.last_seen": "마지막 발견",
    "popup.vehicles": "발견 차량",
    "popup.sightings": "발견 횟수",
    "popup.status": "상태",
    "popup.duplicate_of": "원 민원",
    "popup.duplicate_pick": "같은 대상의 원 민원",
    "popup.duplicate_none": "같은 종류의 다른 민원이 없습니다",
    "popup.crop": "발견 부분",
    "popup.image": "전체 사진",
    "popup.image.open": "전체 사진 열기",
    "popup.no_image": "사진 없음",
    "popup.image_missing": "사진을 아직 받지 못했습니다",
    "popup.note": "메모",
    "popup.note.placeholder": "처리 내용 (선택)",
    "popup.save": "저장",
    "popup.saved": "상태를 저장했습니다",
    "popup.history": "처리 이력",
    "popup.sightings_list": "목격 기록",
    "popup.split": "선택한 목격을 새 민원으로 분리",
    "popup.split_done": "새 민원으로 분리했습니다",
    "popup.split_hint": "다른 물체의 목격을 골라 분리하세요",
    "popup.login_to_edit": "상태를 바꾸려면 로그인하세요",
    "tiles.none": "지도 타일 없음",
    "tiles.unreachable": "지도 타일에 연결할 수 없음",
    "error.network": "서버에 연결할 수 없습니다",
    "error.http": "서버 오류 ({status})",
    "message.close": "닫기",
    "class.garbage": "불법 투기 쓰레기",
    "class.banner": "불법 현수막",
    "class.construction": "무허가 공사",
    "class.bin": "쓰레기통",
    "class.sign": "표지판",
    "status.new": "신규",
    "status.confirmed": "확인됨",
    "status.dispatched": "출동",
    "status.resolved": "처리 완료",
    "status.rejected": "반려",
    "status.duplicate": "중복"
  };

  var en = {
    "title": "Civil-complaint map",
    "lang.switch": "한국어",
    "lang.switch.title": "한국어로 보기",
    "login.user": "User",
    "login.password": "Password",
    "login.submit": "Log in",
    "login.logout": "Log out",
    "login.whoami": "Logged in as {user}",
    "login.failed": "Login failed",
    "login.needed": "Please log in",
    "filters": "Filters",
    "filter.class": "Class",
    "filter.status": "Status",
    "filter.from": "From",
    "filter.to": "To",
    "filter.area": "Only the map's view",
    "filter.vehicle": "Vehicle",
    "filter.vehicle.all": "All vehicles",
    "filter.reset": "Reset filters",
    "csv": "Export CSV",
    "heat": "Heat map",
    "legend": "Legend",
    "legend.unit": "Patrol vehicle",
    "list": "Complaints",
    "list.count": "{n}",
    "list.empty": "No complaints match the filters",
    "list.sightings": "seen {n}×",
    "list.loading": "Loading…",
    "fleet": "Fleet",
    "fleet.empty": "No vehicles yet",
    "fleet.online": "online",
    "fleet.offline": "offline",
    "fleet.last_seen": "Last seen",
    "fleet.position": "Last position",
    "fleet.fps": "Frames",
    "fleet.fps.unit": "{v} fps",
    "fleet.pending": "Outbox pending",
    "fleet.gps_fix": "GPS fix",
    "fleet.broker": "Broker",
    "fleet.disk": "Disk free",
    "fleet.config_version": "Config version",
    "fleet.agent_version": "Agent",
    "fleet.model": "Model",
    "fleet.no_position": "no position",
    "fleet.telemetry": "Telemetry",
    "fleet.no_telemetry": "none yet",
    "yes": "yes",
    "no": "no",
    "none": "—",
    "ago.s": "{n} s ago",
    "ago.m": "{n} min ago",
    "ago.h": "{n} h ago",
    "ago.d": "{n} d ago",
    "popup.class": "Class",
    "popup.score": "Score",
    "popup.first_seen": "First seen",
    "popup.last_seen": "Last seen",
    "popup.vehicles": "Vehicles",
    "popup.sightings": "Sightings",
    "popup.status": "Status",
    "popup.duplicate_of": "Duplicate of",
    "popup.duplicate_pick": "The original complaint",
    "popup.duplicate_none": "no other complaint of this class is shown",
    "popup.crop": "Crop",
    "popup.image": "Full image",
    "popup.image.open": "Open the full image",
    "popup.no_image": "no image",
    "popup.image_missing": "image not received yet",
    "popup.note": "Note",
    "popup.note.placeholder": "What was done (optional)",
    "popup.save": "Save",
    "popup.saved": "Status saved",
    "popup.history": "History",
    "popup.sightings_list": "Sightings",
    "popup.split": "Split the ticked sightings into a new complaint",
    "popup.split_done": "Split into a new complaint",
    "popup.split_hint": "tick the sightings of another object to split them out",
    "popup.login_to_edit": "Log in to change the status",
    "tiles.none": "no map tiles configured",
    "tiles.unreachable": "map tiles unreachable",
    "error.network": "The server cannot be reached",
    "error.http": "Server error ({status})",
    "message.close": "Close",
    "class.garbage": "Illegal dumping",
    "class.banner": "Illegal banner",
    "class.construction": "Unauthorised construction",
    "class.bin": "Bin",
    "class.sign": "Sign",
    "status.new": "New",
    "status.confirmed": "Confirmed",
    "status.dispatched": "Dispatched",
    "status.resolved": "Resolved",
    "status.rejected": "Rejected",
    "status.duplicate": "Duplicate"
  };

  var dictionaries = { ko: ko, en: en };
  var STORAGE_KEY = "patrol-office-lang";

  function initialLang() {
    var saved = null;
    try { saved = window.localStorage.getItem(STORAGE_KEY); } catch (e) { /* private mode */ }
    if (saved && dictionaries[saved]) return saved;
    var nav = (navigator.languages && navigator.languages[0]) || navigator.language || "";
    return nav.toLowerCase().indexOf("ko") === 0 ? "ko" : "en";
  }

  var lang = initialLang();

  /* The text for key in the current language, {name} replaced from params. A key that
   * neither dictionary has comes back as itself, so a missing word shows, not a blank. */
  function t(key, params) {
    var text = dictionaries[lang][key];
    if (text === undefined) text = en[key];
    if (text === undefined) {
      var dot = key.indexOf(".");
      // An unknown class or status (a newer server): its own name.
      text = (dot > 0 && (key.slice(0, dot) === "class" || key.slice(0, dot) === "status"))
        ? key.slice(dot + 1) : key;
    }
    if (params) {
      text = text.replace(/\{(\w+)\}/g, function (m, name) {
        return params[name] !== undefined ? String(params[name]) : m;
      });
    }
    return text;
  }

  /* Fills every element under root that names a key: data-i18n (text),
   * data-i18n-placeholder, data-i18n-title and data-i18n-aria-label. */
  function apply(root) {
    root = root || document;
    var i, el, nodes;
    nodes = root.querySelectorAll("[data-i18n]");
    for (i = 0; i < nodes.length; i++) { el = nodes[i]; el.textContent = t(el.getAttribute("data-i18n")); }
    nodes = root.querySelectorAll("[data-i18n-placeholder]");
    for (i = 0; i < nodes.length; i++) { el = nodes[i]; el.placeholder = t(el.getAttribute("data-i18n-placeholder")); }
    nodes = root.querySelectorAll("[data-i18n-title]");
    for (i = 0; i < nodes.length; i++) { el = nodes[i]; el.title = t(el.getAttribute("data-i18n-title")); }
    nodes = root.querySelectorAll("[data-i18n-aria-label]");
    for (i = 0; i < nodes.length; i++) {
      el = nodes[i]; el.setAttribute("aria-label", t(el.getAttribute("data-i18n-aria-label")));
    }
    if (root === document) {
      document.documentElement.lang = lang;
      document.title = t("title");
    }
  }

  function setLang(next) {
    if (!dictionaries[next]) return;
    lang = next;
    try { window.localStorage.setItem(STORAGE_KEY, next); } catch (e) { /* private mode */ }
    apply(document);
  }

  window.I18N = {
    dictionaries: dictionaries,
    t: t,
    apply: apply,
    setLang: setLang,
    lang: function () { return lang; },
    /* The locale for dates and numbers. */
    locale: function () { return lang === "ko" ? "ko-KR" : "en-GB"; }
  };
})();
