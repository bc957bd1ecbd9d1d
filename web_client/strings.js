// Every user-visible text of the applicant's page, keyed by language.
// Translators: copy the `en` block, change the key to your language tag
// (for example "de" or "pt-BR") and translate the values. Keep the
// {placeholders} as they are; the page fills them in.
// Nothing else in the page contains text shown to the applicant.

export const STRINGS = {
  en: {
    // Page
    page_title: "Identity check",
    page_heading: "Identity check",
    loading: "Loading…",
    noscript: "This check needs JavaScript. Please turn it on and reload the page.",

    // Privacy notice
    notice_heading: "Before you start",
    notice_intro:
      "This page checks that a real, live person is taking part, on behalf of {operator}. " +
      "It takes about a minute.",
    notice_what_heading: "What is captured",
    notice_what:
      "Only while the check runs: video of your face from your camera, a few still " +
      "frames from that video, the sequence of colours shown on your screen, and " +
      "measurements taken from each video frame (such as where your face is and how " +
      "bright it is). Nothing is captured before you press Start.",
    notice_why_heading: "Why",
    notice_why:
      "To check that a live person is present and, if {operator} gave the service a " +
      "photo from your identity document, that it is the same person.",
    notice_keep_heading: "How long it is kept",
    notice_keep:
      "Face video and still frames are deleted after {hours} hours. The result of the " +
      "check is given to {operator}.",
    notice_who_heading: "Who runs this service",
    notice_who: "This service is operated by {operator}.",
    notice_more: "Read the full privacy notice",
    notice_contact: "Questions about your data: {contact}",
    operator_unknown: "the organisation that sent you this link",

    // Photosensitivity
    flash_warning_heading: "Flashing light warning",
    flash_warning:
      "During the check your screen will flash coloured light for about 3 seconds. " +
      "If you have photosensitive epilepsy, or flashing light has ever caused you a " +
      "seizure, do not start the check.",

    // Tips
    tips_heading: "For a good result",
    tip_light: "Sit somewhere evenly lit and not too bright; avoid direct sunlight.",
    tip_screen: "Turn your screen brightness up.",
    tip_face: "Remove sunglasses, hats and face coverings.",
    tip_hold: "Hold your phone or sit at about arm's length, facing the screen.",

    // Consent
    consent_heading: "Your agreement",
    consent_privacy:
      "I have read this notice and agree that my face is captured and checked as described.",
    consent_age: "I am at least {min_age} years old.",
    start: "Start the check",
    start_hint: "Tick both boxes to start.",

    // Starting
    camera_asking_heading: "Allow your camera",
    camera_asking: "Your browser will ask to use your camera. Choose Allow.",
    connecting_heading: "Connecting…",
    connecting: "Setting up a secure connection.",

    // Face fitting
    fit_heading: "Fit your face in the oval",
    selfview_label: "Your camera picture (mirrored)",
    cancel: "Cancel",
    progress_label: "Progress of the check",
    guidance_wait: "Looking for your face…",
    guidance_no_face: "We can't see your face. Look at the screen.",
    guidance_multiple_faces: "Make sure only you are in the picture.",
    guidance_move_closer: "Move closer.",
    guidance_move_back: "Move back a little.",
    guidance_centre_face: "Put your face in the middle of the oval.",
    guidance_hold_still: "Hold still.",
    guidance_too_dark: "It is too dark. Find more light, facing you.",
    guidance_too_bright: "It is too bright. Move away from bright light or the sun.",
    guidance_ok: "Good. Hold still.",

    // Colour sequence
    prepare_heading: "Get ready",
    prepare_body:
      "Keep looking at the screen and keep still. It will flash colours for about 3 seconds.",
    prepare_warning: "Flashing light: if you have photosensitive epilepsy, press Stop now.",
    prepare_count: "Starting in {n}",
    prepare_now: "Now",
    stop: "Stop",
    rest_heading: "Hold still",
    rest_body: "Almost done.",

    // Scoring
    scoring_heading: "Checking…",
    scoring_body: "This takes a few seconds. You can look away from the screen.",

    // Outcomes
    passed_heading: "Check complete",
    passed_body: "Thank you. You can close this page now.",
    failed_heading: "The check was not successful",
    failed_body:
      "We could not confirm this check. If you think this is a mistake, contact {operator}.",
    retry_heading: "Let's try that again",
    retry_action: "Try again",
    retry_elsewhere: "To try again, go back to {operator} and start a new check.",
    retry_requested: "A new check has been requested. Follow the instructions from {operator}.",
    cancelled_heading: "Check stopped",
    cancelled_body: "You stopped the check. The camera is off and nothing more is captured.",

    // Retry reasons (codes the service sends with a `retry` outcome)
    reason_no_face: "We couldn't see your face clearly during the check.",
    reason_face_lost: "Your face left the picture during the check.",
    reason_multiple_faces: "More than one face was in the picture.",
    reason_face_out_of_frame: "Part of your face was outside the picture.",
    reason_face_too_small: "You were too far from the camera. Come a little closer.",
    reason_moving_too_much: "You moved during the check. Try to keep still while the screen flashes.",
    reason_too_dark: "It was too dark. Find a place with more light on your face.",
    reason_too_bright:
      "It was too bright for the screen's light to show. Move away from bright light or the sun.",
    reason_weak_response:
      "The light from your screen didn't reach your face well enough. Turn your screen " +
      "brightness up, come a little closer and avoid bright light behind or around you.",
    reason_too_few_frames:
      "Your camera sent too few pictures. Close other apps and check your connection.",
    reason_unmeasurable: "We couldn't measure the check. Please try again.",
    reason_timeout: "The check took too long. Please try again.",
    reason_connection: "The connection was interrupted. Please try again.",
    reason_default: "Something got in the way of the check. Please try again.",

    // Errors
    error_heading: "Something went wrong",
    err_no_session_heading: "This link is incomplete",
    err_no_session: "Open the link you were given again, or ask for a new one.",
    err_insecure_heading: "This page must be opened securely",
    err_insecure:
      "The camera only works on pages opened with https://. Open the link exactly as you received it.",
    err_unsupported_heading: "Your browser can't run this check",
    err_unsupported:
      "Please use an up-to-date version of Chrome, Edge, Firefox or Safari.",
    err_camera_denied_heading: "Camera access is blocked",
    err_camera_denied:
      "Allow this site to use your camera (look for the camera icon in the address bar or " +
      "in your browser's site settings), then press Try again.",
    err_camera_none_heading: "No camera found",
    err_camera_none: "Connect a camera, or use a device with a front camera, then press Try again.",
    err_camera_in_use_heading: "Your camera is busy",
    err_camera_in_use:
      "Another app or browser tab is using the camera. Close it, then press Try again.",
    err_camera_failed_heading: "The camera could not start",
    err_camera_failed: "Check that your camera works in other apps, then press Try again.",
    err_camera_ended_heading: "The camera stopped",
    err_camera_ended: "Your camera stopped sending pictures during the check.",
    err_bad_sdp: "Your browser's connection request was not accepted. Try another browser.",
    err_bad_token: "This link is not valid. Ask for a new one.",
    err_token_used: "This link has already been used. Ask for a new one.",
    err_expired: "This link has expired. Ask for a new one.",
    err_busy: "The service is busy right now. You can try again in {seconds} seconds.",
    err_busy_now: "The service was busy. You can try again now.",
    err_network: "We couldn't reach the service. Check your internet connection and try again.",
    err_server: "The service had a problem. Please try again later.",
    err_connection_failed:
      "We couldn't connect to the service. Check your connection, or try another network.",
    err_connection_lost: "The connection was lost during the check.",
    err_demo_failed: "A demo check could not be created.",
    try_again: "Try again",
  },
};
