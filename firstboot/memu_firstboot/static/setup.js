// Where scripting runs: put the browser's own time zone into the form (the server pre-filled
// one from the language; the browser knows better), but never over what the person chose.
(function () {
  "use strict";
  var field = document.getElementById("timezone");
  if (!field || !field.dataset.prefilled) return;
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.querySelector('#zones option[value="' + zone + '"]')) field.value = zone;
  } catch (e) { /* an old browser: the pre-filled zone stays */ }
})();
